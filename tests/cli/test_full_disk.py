"""A disk that does not take a run's own files (run.json, metrics.jsonl): one line and exit 2, as a checkpoint save
that fails says it, never a traceback; every callback still ends and the run directory's lock is released (an
in-process caller, the demo, goes on). The disk is made full by a file-size limit (RLIMIT_FSIZE: the write fails
with EFBIG, what `ulimit -f` does), in this process: Python ignores the SIGXFSZ that would otherwise kill it."""
import errno
import json
import os
import resource
from contextlib import contextmanager

import pytest

from megadalle.cli import main
from megadalle.train import rundir
from megadalle.train.callbacks import Callback, end_all
from megadalle.disk_errors import describe
from megadalle.train.disk_full import RESUMES, RunFileError

LIMIT = 1 << 16
"""The file-size limit: far above every run file but run.json, far below a checkpoint."""


@contextmanager
def file_size_limit(limit):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def one_line_exit_2(capsys, argv, limit):
    with file_size_limit(limit):
        code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("megadalle train:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.distributed
def test_run_json_past_the_limit_is_one_line_and_leaves_no_temporary(train_overrides, tmp_path, capsys):
    run = tmp_path / "transformer" / "exp"
    argv = ["train", *train_overrides, f"out_dir={tmp_path}", "name=exp"]
    line = one_line_exit_2(capsys, argv, 2048)  # run.json, the full config, is longer
    assert line == (f"megadalle train: cannot write {run.resolve() / 'run.json'} (File too large): raise the "
                    "file-size limit (ulimit -f), then rerun the same command (it resumes from the newest checkpoint)")
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # no `.run.json.<pid>-<hex>.tmp`
    rundir.RunLock(run).release()  # free


@pytest.mark.distributed
def test_metrics_past_the_limit_mid_run_is_one_line_every_callback_ends_and_the_lock_is_free(
        train_overrides, tmp_path, capsys, monkeypatch):
    """metrics.jsonl's write failed (a traceback), then Console.end() failed again closing it, which skipped the
    other callbacks' end() and the lock's release. The line the disk did not take goes whole: no half line for the
    resumed run to append after."""
    from megadalle.train import media

    ended = []
    monkeypatch.setattr(media.MediaFiles, "end", lambda self: ended.append(type(self).__name__))
    run = tmp_path / "transformer" / "exp"
    run.mkdir(parents=True)
    earlier = json.dumps({"step": -1, "pad": "x" * (LIMIT - 100)}) + "\n"  # a line fits, not two
    (run / "metrics.jsonl").write_text(earlier)
    argv = ["train", *train_overrides, f"out_dir={tmp_path}", "name=exp"]
    line = one_line_exit_2(capsys, argv, LIMIT)
    assert line.startswith(f"megadalle train: cannot write {run.resolve() / 'metrics.jsonl'} (File too large): ")
    assert (run / "metrics.jsonl").read_text() == earlier and ended == ["MediaFiles"]
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())
    rundir.RunLock(run).release()  # free: the failed run released it


class _Ends(Callback):
    def __init__(self, log, fails=False):
        self.log, self.fails = log, fails

    def end(self):
        self.log.append(self)
        if self.fails:
            raise OSError(errno.ENOSPC, "No space left on device")


def test_one_end_that_fails_does_not_skip_the_others(capsys):
    log = []
    callbacks = [_Ends(log), _Ends(log, fails=True), _Ends(log)]
    with pytest.raises(OSError, match="No space left"):
        end_all(callbacks, failing=False)
    assert log == callbacks
    log.clear()
    end_all(callbacks, failing=True)  # the run's own error goes on; this one is said in a line
    assert log == callbacks
    assert capsys.readouterr().err == "[train] _Ends.end() failed too: OSError: [Errno 28] No space left on device\n"


@pytest.mark.parametrize("code, remedy", [(errno.ENOSPC, "free space on its disk"),
                                          (errno.EDQUOT, "free space or raise the quota"),
                                          (errno.EROFS, "make its file system writable")])
def test_each_cause_names_its_remedy_and_other_errors_stay_errors(code, remedy):
    err = OSError(code, "x", "/runs/a/run.json")
    assert describe(err, then=RESUMES, error=RunFileError) == \
        f"cannot write /runs/a/run.json ({os.strerror(code)}): {remedy}, then {RESUMES}"
    assert describe(OSError(code, "x"), then=RESUMES, error=RunFileError).startswith(
        "cannot write a file of the run directory")
    assert describe(OSError(errno.EACCES, "Permission denied", "/runs/a/run.json"), then=RESUMES,
                    error=RunFileError) is None


@pytest.mark.distributed
def test_rank_0s_full_disk_stops_every_rank_with_its_line(train_overrides, tmp_path):
    """Rank 0 alone writes metrics.jsonl: leaving alone, it left the other ranks waiting in the next update's
    collectives until their timeout (30 minutes by default)."""
    import subprocess
    import sys

    import dist_launch as launch

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": -1, "pad": "x" * (LIMIT - 100)}) + "\n")
    port = launch.free_port()
    procs = []
    for rank in range(2):
        env = dict(launch.base_env(), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
        limit = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))) if rank == 0 else None
        procs.append(subprocess.Popen([sys.executable, "-m", "megadalle", "train", *train_overrides, f"run_dir={run}"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                      preexec_fn=limit))
    try:
        errs = [p.communicate(timeout=180)[1] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise AssertionError("a rank went on while rank 0 had stopped") from None
    assert [p.returncode for p in procs] == [2, 2], errs
    for rank, err in enumerate(errs):
        assert (f"megadalle train: rank {rank}: rank 0: cannot write {run.resolve() / 'metrics.jsonl'} (File too "
                "large)") in err and "Traceback" not in err, err


def test_after_one_callback_fails_the_others_still_run_every_time():
    """`self.failure or attempt(...)` skipped every callback after the first that failed (wandb lost the metrics of
    the update whose metrics.jsonl line the disk refused; the media files were skipped)."""
    from types import SimpleNamespace

    from megadalle.train.loop import Trainer

    log = []
    trainer = SimpleNamespace(callbacks=[_Ends(log, fails=True), _Ends(log)], failure=None)
    for _ in range(2):
        Trainer._tell(trainer, "end")
    assert log == trainer.callbacks * 2
    assert "No space left" in trainer.failure
