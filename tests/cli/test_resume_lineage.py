"""Reruns of `megadalle train` that must not redo updates: the same `resume=<step dir>` again (a Slurm requeue
repeats the command line), and a rerun after a kill between a checkpoint's manifest and `latest`."""
import os
import signal
import subprocess
import sys

import pytest

from megadalle.cli import main


def tag(step):
    return f"step_{step:08d}"


@pytest.mark.distributed
def test_the_same_resume_by_name_goes_back_once(train_overrides, tmp_path, capsys):
    """The first resume=<step_2> goes back; its reruns continue from their newest checkpoint, also once step_2
    is pruned (trainer.keep_checkpoints=1), instead of redoing the updates after it and growing abandoned/."""
    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    command = ["train", *train_overrides, f"run_dir={run}", "trainer.checkpoint_every=2",
               "trainer.keep_checkpoints=0"]
    assert main([*command, "trainer.steps=4"]) == 0
    by_name = [*command, f"resume={checkpoints / tag(2)}"]
    capsys.readouterr()
    assert main([*by_name, "trainer.steps=4"]) == 0
    assert f"resumed from {checkpoints / tag(2)} at step 2" in capsys.readouterr().out
    assert sorted(p.name for p in (checkpoints / "abandoned").iterdir()) == [tag(4)]
    assert main([*by_name, "trainer.steps=6", "trainer.keep_checkpoints=1"]) == 0
    out, err = capsys.readouterr()
    assert f"resumed from {checkpoints / tag(4)} at step 4" in out
    assert f"resume={checkpoints / tag(2)}: this run resumed from it before and has saved {checkpoints / tag(4)}" in err
    assert not (checkpoints / tag(2)).exists()
    assert main([*by_name, "trainer.steps=8", "trainer.keep_checkpoints=1"]) == 0
    assert f"resumed from {checkpoints / tag(6)} at step 6" in capsys.readouterr().out
    assert sorted(p.name for p in (checkpoints / "abandoned").iterdir()) == [tag(4)]
    assert sorted(p.name for p in checkpoints.glob("step_*")) == [tag(8)]


KILLED_BEFORE_SECOND_LATEST = """
import os, signal, sys
replace, renamed = os.replace, []
def replace_or_die(src, dst):
    if os.path.basename(dst) == "latest":
        renamed.append(dst)
        if len(renamed) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst)
os.replace = replace_or_die
from megadalle.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.distributed
def test_a_kill_before_latest_loses_no_checkpoint(train_overrides, tmp_path, capsys):
    """SIGKILL as the second save's `latest` is renamed into place: step_4 is complete, `latest` names step_2.
    The rerun resumes from step_4 rather than redoing two updates and filing step_4 under abandoned/."""
    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    command = ["train", *train_overrides, f"run_dir={run}", "trainer.checkpoint_every=2"]
    killed = subprocess.run([sys.executable, "-c", KILLED_BEFORE_SECOND_LATEST, *command, "trainer.steps=6"],
                            env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (checkpoints / "latest").read_text() == tag(2)
    assert (checkpoints / tag(4) / "manifest.json").is_file()
    assert len(list(checkpoints.glob(".latest@*.tmp"))) == 1  # the kill's leftover, which the next save removes
    assert main([*command, "trainer.steps=6"]) == 0
    out, err = capsys.readouterr()
    assert f"resumed from {checkpoints / tag(4)} at step 4" in out
    assert f"{checkpoints / tag(4)} is complete and continues {tag(2)}" in err
    assert not (checkpoints / "abandoned").exists()
    assert (checkpoints / "latest").read_text() == tag(6)
    assert not list(checkpoints.glob(".latest@*.tmp"))
