"""A rerun of a finished train-clip or train-dvae run leaves its exported weights as they are: rewritten with the same
bytes, they had a new modification time, and a stopped `generate` that reranked with that CLIP (or decoded with that
dVAE) was refused as "other settings" (sampling/resume.py records the files behind its weights by size and time).
A rerun that trains on, or finds weights exported otherwise (another checkpoint, the EMA or not), writes them again."""
import json

import pytest

from megadalle.cli import main

from tests.sample.clip_run import clip_overrides


def dvae_overrides(tmp_path, shards, *overrides):
    return [f"data.shards={shards}", "data.num_workers=0", "dvae=tiny", "dvae.n_hid=16", "dvae.vocab_size=64",
            "trainer=tiny", "trainer.steps=1", "logger=none", f"run_dir={tmp_path / 'run'}", *overrides]


@pytest.fixture(params=["train-clip", "train-dvae"])
def verb_run(request, tmp_path):
    """(the verb, its overrides, the weights it exports) for a 1-step run."""
    if request.param == "train-clip":
        return "train-clip", clip_overrides(tmp_path, "trainer.steps=1"), tmp_path / "run" / "clip.safetensors"
    shards = request.getfixturevalue("image_shards")
    return "train-dvae", dvae_overrides(tmp_path, shards), tmp_path / "run" / "dvae.safetensors"


def state(path):
    return path.stat().st_mtime_ns, path.stat().st_ino, path.with_suffix(".json").stat().st_mtime_ns


def test_a_rerun_of_a_finished_run_leaves_its_weights_and_one_that_trains_on_writes_them(verb_run, capsys):
    verb, overrides, weights = verb_run
    record = weights.with_suffix(".json")
    assert main([verb, *overrides]) == 0
    before = state(weights)
    capsys.readouterr()
    assert main([verb, *overrides]) == 0
    assert state(weights) == before
    assert f"[{verb}] weights: {weights} + {record.name} (as exported before: the run trained nothing new)" \
        in capsys.readouterr().out
    config = json.loads(record.read_text())
    config["exported_from"]["ema"] = True  # as `megadalle export ema=true` of another run would record it
    record.write_text(json.dumps(config))
    assert main([verb, *overrides]) == 0
    assert state(weights) != before and json.loads(record.read_text())["exported_from"]["ema"] is False
    again = state(weights)
    assert main([verb, *overrides, "trainer.steps=2"]) == 0
    assert state(weights) != again
    assert json.loads(record.read_text())["exported_from"]["checkpoint"] == "step_00000002"
