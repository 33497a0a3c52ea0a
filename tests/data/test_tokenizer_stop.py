"""`megadalle tokenizer` stops at once: sentencepiece's training never returns to Python until it is done, so in the
verb's own process a Ctrl-C or a stop signal waited for its end (minutes at 10 million captions). It trains in a
child now, which a stop kills; a child the kernel kills is one line naming the signal and what bounds its memory."""
import os
import signal
import time

import pytest

from megadalle.cli import main
from megadalle.data import tokenizer as tokenizer_module
from megadalle.train.signals import STOPPED_EXIT
from tests.long_c_call import in_c_for, signal_once_started


@pytest.mark.parametrize("sig, status, line", [
    (signal.SIGTERM, STOPPED_EXIT, "megadalle tokenizer: stopped by SIGTERM; rerun the same command to finish it"),
    (signal.SIGUSR1, STOPPED_EXIT, "megadalle tokenizer: stopped by SIGUSR1; rerun the same command to finish it"),
    (signal.SIGINT, 130, "megadalle tokenizer: interrupted")], ids=["TERM", "USR1", "Ctrl-C"])
def test_a_stop_during_training_ends_the_tokenizer_at_once_with_one_line(caption_shards, tmp_path, monkeypatch,
                                                                         capsys, sig, status, line):
    started, output = tmp_path / "started", tmp_path / "tok.model"
    monkeypatch.setattr(tokenizer_module, "train_bpe", lambda *args: in_c_for(60.0, started))
    signal_once_started(started, sig)
    begun = time.monotonic()
    assert main(["tokenizer", f"input={caption_shards}", f"output={output}"]) == status
    assert time.monotonic() - begun < 30  # not the training's 60 s
    assert started.exists() and not output.exists()
    assert capsys.readouterr().err.strip().splitlines()[-1] == line


def test_a_training_the_kernel_kills_is_one_line_naming_the_signal(caption_shards, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tokenizer_module, "train_bpe", lambda *args: os.kill(os.getpid(), signal.SIGKILL))
    output = tmp_path / "tok.model"
    assert main(["tokenizer", f"input={caption_shards}", f"output={output}", "max_sentences=5000"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not output.exists()
    assert err.startswith(f"megadalle tokenizer: the tokenizer's training on 2000 samples of {caption_shards} "
                          "ended with SIGKILL before it finished")
    assert "max_sentences=5000 bounds the captions it holds" in err
