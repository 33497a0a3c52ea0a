"""The loop's rarer lines name the verb running it, as its others do: under train-dvae the Ctrl-C line, a resume on
other data's line (new_data=true) and a callback's failing end() said `[train]`."""
import os
import signal

import pytest

from megadalle.config.compose import compose
from megadalle.train import loop, media
from megadalle.train.dvae import train_dvae

from .conftest import write_image_shards


def dvae_config(run_dir, shards, *overrides: str):
    return compose("train-dvae", [f"data.shards={shards}", "data.num_workers=0", "dvae=tiny", "dvae.n_hid=16",
                                  "dvae.vocab_size=64", "trainer=tiny", "trainer.micro_batch=4", "logger=none",
                                  f"run_dir={run_dir}", *overrides])


def test_ctrl_c_a_resume_on_other_data_and_a_failing_end_name_train_dvae(tmp_path, image_shards, capsys,
                                                                        monkeypatch):
    update = loop.Trainer._update

    def interrupted(self, runner):
        metrics = update(self, runner)
        os.kill(os.getpid(), signal.SIGINT)
        return metrics

    with monkeypatch.context() as patched:
        patched.setattr(loop.Trainer, "_update", interrupted)
        assert train_dvae(dvae_config(tmp_path / "run", image_shards, "trainer.steps=3")) is None  # stopped at step 1
    out, err = capsys.readouterr()
    assert "[train-dvae] Ctrl-C: saving a checkpoint after this update" in err
    assert "[train-dvae] stopped by signal at step 1" in out + err  # the Result's report names the verb too

    def broken(self):
        raise OSError(28, "No space left on device")

    def failed(self, runner):
        raise RuntimeError("the update failed")

    grown = tmp_path / "grown"
    write_image_shards(grown, 48, 32, 16)
    monkeypatch.setattr(loop.Trainer, "_update", failed)
    monkeypatch.setattr(media.MediaFiles, "end", broken)
    with pytest.raises(RuntimeError, match="the update failed"):
        train_dvae(dvae_config(tmp_path / "run", grown, "trainer.steps=3", "new_data=true"))
    out, err = capsys.readouterr()
    assert "[train-dvae] resuming " in out and " on other data (new_data=true)" in out
    assert "[train-dvae] MediaFiles.end() failed too: OSError: [Errno 28] No space left on device" in err
    assert "[train]" not in out + err
