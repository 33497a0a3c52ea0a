"""Which checkpoint a resume picks: complete ones only, `latest` first, the newest complete one older
than a damaged `latest` as fall-back, an error where a save once finished and nothing is usable now;
what a save clears away (older ones beyond `keep`, newer ones of an abandoned run); and what a save or a
load that fails leaves and says. Single process: DeepSpeed's part is a stand-in writing one torch file."""
import errno
import json
import os
import re
import resource
import shutil
from pathlib import Path

import pytest
import torch

from megadalle.processes import owner_tag
from megadalle.train.checkpoint import CheckpointError
from megadalle.train.checkpoint_choice import choose, find_resumable, resolve
from megadalle.train.checkpoint_damage import damage, unreadable
from megadalle.train.checkpoint_load import load
from megadalle.train.checkpoint_save import prune, save
from megadalle.train.consolidate import checkpoint_dir
from megadalle.train.durable import atomic_write
from megadalle.train.lineage import Lineage


def fake_checkpoint(root, step, complete=True):
    path = root / f"step_{step:08d}"
    path.mkdir(parents=True)
    torch.save({"step": step}, path / "model.pt")
    if complete:
        files = {"model.pt": (path / "model.pt").stat().st_size}
        (path / "manifest.json").write_text(json.dumps({"step": step, "files": files}))
    return path


def names(root):
    return sorted(p.name for p in root.iterdir())


class FakeEngine:
    """DeepSpeed's save and load as far as checkpoint_save.save and checkpoint_load.load see them: one torch file
    per tag directory."""

    lr_scheduler = None
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)  # what a load settles (apex_adam)

    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        path = Path(save_dir) / tag
        path.mkdir(parents=True, exist_ok=True)
        torch.save(client_state, path / "mp_rank_00_model_states.pt")

    def load_checkpoint(self, load_dir, tag, **flags):
        path = Path(load_dir) / tag
        return str(path), torch.load(path / "mp_rank_00_model_states.pt", weights_only=True)


class Run:
    """What the trainer does with a checkpoints folder `root`: it holds the lineage its checkpoint choice returned
    and passes it to each save, which returns the next one."""

    def __init__(self, root):
        self.root, self.lineage = root, Lineage()

    def resolve(self, resume):
        chosen, self.lineage = choose(resume, self.root)
        return chosen

    def save(self, step, engine=None, keep=0, **state):
        self.lineage = save(engine or FakeEngine(), self.root, step, {"step": step, **state}, 0, self.lineage,
                            keep=keep)
        return self.lineage.parent


def test_latest_wins_when_complete(tmp_path):
    fake_checkpoint(tmp_path, 2)
    fake_checkpoint(tmp_path, 4)
    (tmp_path / "latest").write_text("step_00000002")
    assert find_resumable(tmp_path) == "step_00000002"


def test_truncated_file_falls_back_to_previous(tmp_path, capsys):
    fake_checkpoint(tmp_path, 2)
    newest = fake_checkpoint(tmp_path, 4)
    (tmp_path / "latest").write_text("step_00000004")
    (newest / "model.pt").write_bytes(b"x" * 3)
    assert "has 3 bytes, the manifest says" in damage(newest)
    assert find_resumable(tmp_path) == "step_00000002"
    assert "falling back" in capsys.readouterr().err


def test_unfinished_save_and_missing_latest(tmp_path):
    fake_checkpoint(tmp_path, 2)
    fake_checkpoint(tmp_path, 4, complete=False)
    assert find_resumable(tmp_path) == "step_00000002"
    assert resolve("auto", tmp_path) == tmp_path / "step_00000002"


def test_fresh_and_explicit_resumes(tmp_path):
    assert resolve("auto", tmp_path / "none") is None
    assert resolve("never", tmp_path / "none") is None
    fake_checkpoint(tmp_path, 2)
    broken = fake_checkpoint(tmp_path, 4)
    (broken / "model.pt").unlink()
    with pytest.raises(CheckpointError, match="model.pt is missing"):
        resolve(str(broken), tmp_path)
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        resolve("never", tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        resolve(str(tmp_path / "nope"), tmp_path)


def test_resume_naming_a_run_or_its_checkpoints_folder_names_the_checkpoint_to_pass(tmp_path):
    """resume=<another run> was refused as "has no manifest.json (the save did not finish)": no save was unfinished,
    and the user was not told which folder to give."""
    other = tmp_path / "other"
    checkpoints = other / "checkpoints"
    fake_checkpoint(checkpoints, 2)
    fake_checkpoint(checkpoints, 4)
    fake_checkpoint(checkpoints, 6, complete=False)
    new = tmp_path / "new" / "checkpoints"
    for given, what in ((other, "a run directory"), (checkpoints, "a folder of checkpoints")):
        with pytest.raises(CheckpointError) as err:
            resolve(str(given), new)
        assert str(err.value) == (f"resume={given}: {what}, not a checkpoint (a step_* directory): pass "
                                  f"resume={checkpoints / 'step_00000004'}, its newest complete one")
    for step in (2, 4):
        (checkpoints / f"step_{step:08d}" / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"a run directory, not a checkpoint \(a step_\* directory\): it holds "
                                              "no complete one$"):
        resolve(str(other), new)


def test_prune_keeps_newest_complete_and_drops_older_leftovers(tmp_path):
    fake_checkpoint(tmp_path, 1, complete=False)
    for step in (2, 4, 6):
        fake_checkpoint(tmp_path, step)
    prune(tmp_path, keep=2)
    assert names(tmp_path) == ["step_00000004", "step_00000006"]


def test_going_back_sets_the_abandoned_run_aside(tmp_path, capsys):
    """resume=<step_10> in a run that went on to step 30: the save of step 15 keeps step 10 and 15 (not the
    abandoned run's newest by name) and moves the abandoned ones to abandoned/, where resume never looks."""
    run = Run(tmp_path)
    for step in (5, 10, 20, 25, 30):
        fake_checkpoint(tmp_path, step)
    fake_checkpoint(tmp_path, 35, complete=False)
    (tmp_path / "latest").write_text("step_00000030")
    assert run.resolve(str(tmp_path / "step_00000010")) == tmp_path / "step_00000010"
    run.save(15, keep=2)
    assert names(tmp_path) == ["abandoned", "latest", "step_00000010", "step_00000015"]
    assert names(tmp_path / "abandoned") == ["step_00000020", "step_00000025", "step_00000030"]
    assert "step_00000030 comes from a run that went past the checkpoint this one resumed from" in (
        capsys.readouterr().err)
    assert find_resumable(tmp_path) == "step_00000015"
    run.save(20, keep=2)
    assert names(tmp_path) == ["abandoned", "latest", "step_00000015", "step_00000020"]
    run.save(18, keep=2)  # back again: a second step_20 joins the first
    assert names(tmp_path / "abandoned") == ["step_00000020", "step_00000020.2", "step_00000025", "step_00000030"]


def test_fallback_never_goes_past_the_checkpoint_latest_names(tmp_path, capsys):
    """A damaged step_15 that `latest` names falls back to step_10, not to a newer abandoned step_30."""
    for step in (10, 15, 30):
        fake_checkpoint(tmp_path, step)
    (tmp_path / "step_00000015" / "manifest.json").unlink()
    (tmp_path / "latest").write_text("step_00000015")
    assert find_resumable(tmp_path) == "step_00000010"
    assert "latest names step_00000015, which is damaged" in capsys.readouterr().err


def test_garbled_latest_is_damage_not_a_traceback(tmp_path, capsys):
    fake_checkpoint(tmp_path, 2)
    fake_checkpoint(tmp_path, 4)
    (tmp_path / "latest").write_bytes(bytes(range(128, 256)))
    assert find_resumable(tmp_path) == "step_00000004"
    assert "not a checkpoint tag (garbled); falling back to step_00000004" in capsys.readouterr().err
    (tmp_path / "latest").write_text("step_00000009\n")
    assert find_resumable(tmp_path) == "step_00000004"
    assert "step_00000009 does not exist" in capsys.readouterr().err
    (tmp_path / "step_00000004" / "manifest.json").write_text('{"files": [1]}')
    assert "manifest.json is unreadable" in damage(tmp_path / "step_00000004")


def test_no_usable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    """A run that once finished a save never silently restarts from step 0 (and later prunes its damaged
    checkpoints); one killed in its first save has nothing to lose and starts fresh."""
    fake_checkpoint(tmp_path, 2, complete=False)
    assert resolve("auto", tmp_path) is None
    for step in (4, 6):
        fake_checkpoint(tmp_path, step)
        (tmp_path / f"step_{step:08d}" / "model.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="step_00000006/model.pt has 1 bytes.*is left; to start over use a new "
                                              "run_dir"):
        resolve("auto", tmp_path)
    reader = tmp_path / "run"
    reader.mkdir()
    (reader / "checkpoints").symlink_to(tmp_path)
    (reader / "run.json").write_text("{}")
    with pytest.raises(CheckpointError) as read:  # export and generate: their own way out, not train's keys
        checkpoint_dir(reader)
    assert str(read.value).endswith(f"is left; to read another checkpoint of the run (STEP: one of its step_* "
                                    f"folders): `megadalle export run={reader} checkpoint=STEP output=DIR "
                                    "tokenizer=TOKENIZER dvae_weights=DVAE`, then weights=DIR (TOKENIZER: the "
                                    "sentencepiece model the run trained with; DVAE: the dVAE weights whose codes "
                                    "the run's token shards hold)")
    for step in (4, 6):
        (tmp_path / f"step_{step:08d}" / "manifest.json").unlink()
    (tmp_path / "latest").write_text("step_00000006")
    with pytest.raises(CheckpointError, match="no usable checkpoint in .*latest names step_00000006, which is "
                                              "damaged: .* has no manifest.json .*, and no complete checkpoint "
                                              "before it"):
        resolve("auto", tmp_path)


def test_a_full_disk_fails_the_save_in_one_line_and_leaves_no_half_checkpoint(tmp_path):
    """What torch says when a write fails (`unexpected pos`, naming no file) gets the step directory, the likely
    cause and the checkpoint still good; the unfinished directory goes."""
    run = Run(tmp_path)
    run.save(2)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, hard))  # a file-size limit: the write fails with EFBIG
    try:
        with pytest.raises(CheckpointError, match=r"cannot save the checkpoint \S*step_00000004 \(RuntimeError: .*"
                                                  r"unexpected pos .*\): is the disk full, over quota or past a "
                                                  r"file-size limit .*step_00000002 is the newest good checkpoint"):
            run.save(4, big=torch.zeros(1 << 16))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert names(tmp_path) == ["latest", "step_00000002"]
    assert find_resumable(tmp_path) == "step_00000002"


class MkdirSwallowingEngine(FakeEngine):
    """DeepSpeed 0.19's save: the error of making the step directory is logged and swallowed (engine.py's
    _create_checkpoint_file), and torch.save then fails on the missing folder."""

    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        path = Path(save_dir) / tag
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            pass
        torch.save(client_state, path / "mp_rank_00_model_states.pt")


def test_a_step_directory_the_disk_refuses_is_said_with_its_cause(tmp_path, monkeypatch):
    """A full disk (or an exhausted quota of files) fails the first thing a save does, making its step directory:
    DeepSpeed swallowed that error and the save was reported as "Parent directory ... does not exist", without the
    cause or the disk question."""
    run = Run(tmp_path)
    run.save(2, engine=MkdirSwallowingEngine())
    mkdir = os.mkdir

    def full(path, *args, **kwargs):
        if Path(path).name == "step_00000004":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", full)
    with pytest.raises(CheckpointError, match=r"cannot save the checkpoint \S*step_00000004 \(OSError: \[Errno 28\] "
                                              r"No space left on device.*\): is the disk full, over quota or past a "
                                              r"file-size limit .*step_00000002 is the newest good checkpoint"):
        run.save(4, engine=MkdirSwallowingEngine())
    assert find_resumable(tmp_path) == "step_00000002"


class FailingEngine(FakeEngine):
    """A save that fails with `error` after its files are written."""

    def __init__(self, error: Exception):
        self.error = error

    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        super().save_checkpoint(save_dir, tag, client_state, save_latest)
        raise self.error


@pytest.mark.parametrize("error, said", [
    # the out-of-memory killer took a loader worker: torch's SIGCHLD handler raises it wherever the main thread is
    (RuntimeError("DataLoader worker (pid 4321) is killed by signal: Killed. "),
     "RuntimeError: DataLoader worker (pid 4321) is killed by signal: Killed."),
    (PermissionError(13, "Permission denied"), "PermissionError: [Errno 13] Permission denied"),
])
def test_an_error_that_is_no_refused_write_is_said_without_the_disk_question(tmp_path, error, said):
    """It was said as "is the disk full, over quota or past a file-size limit?", pointing away from the memory or
    the folder's owner."""
    run = Run(tmp_path)
    run.save(2)
    with pytest.raises(CheckpointError) as refused:
        run.save(4, engine=FailingEngine(error))
    assert str(refused.value) == (f"cannot save the checkpoint {tmp_path / 'step_00000004'} ({said}). The unfinished "
                                  f"directory is removed; {tmp_path / 'step_00000002'} is the newest good checkpoint")
    assert names(tmp_path) == ["latest", "step_00000002"]


def test_every_file_is_on_disk_before_the_manifest_says_complete(tmp_path, monkeypatch):
    """fsync of each file and directory before the manifest, and of `latest` before and after its rename:
    otherwise a power loss can leave files at their full size and zeroed, or an empty `latest`."""
    run = Run(tmp_path)
    synced = []
    fsync = os.fsync

    def recording_fsync(fd):
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), (tmp_path / "step_00000002" / "manifest.json").exists()))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    path = run.save(2)
    before_manifest = {name for name, manifest in synced if not manifest}
    assert {str(path / f) for f in ("mp_rank_00_model_states.pt", "rng_rank00000.pt")} | {str(path)} <= before_manifest
    assert str(tmp_path) in before_manifest  # the step directory's own entry
    temporary, directory = (name for name, _ in synced[-2:])
    writer = re.escape(owner_tag())  # the writer's host, pid and start: a kill's leftover is known
    assert re.fullmatch(rf"{tmp_path}/\.latest@{writer}-[0-9a-f]{{8}}\.tmp", temporary)
    assert directory == str(tmp_path)


def test_a_zeroed_file_of_the_right_size_is_damage(tmp_path, capsys):
    """What a power loss leaves: sizes as the manifest says, zeros inside; resume falls back by itself."""
    fake_checkpoint(tmp_path, 2)
    newest = fake_checkpoint(tmp_path, 4)
    (tmp_path / "latest").write_text("step_00000004")
    (newest / "model.pt").write_bytes(bytes((newest / "model.pt").stat().st_size))
    assert find_resumable(tmp_path) == "step_00000002"
    assert "model.pt is not a readable torch file (zeroed or overwritten)" in capsys.readouterr().err
    legacy = newest / "legacy.pt"
    torch.save({"a": 1}, legacy, _use_new_zipfile_serialization=False)  # checkpoint_serialization: false
    assert unreadable(legacy) is None
    (newest / "ema_rank00000.safetensors").write_bytes(bytes(64))
    assert "ema_rank00000.safetensors is not a readable safetensors file" in unreadable(
        newest / "ema_rank00000.safetensors")


def test_a_checkpoint_that_fails_to_load_is_named_with_the_one_before(tmp_path):
    """Damage inside a file, where the size and the zip directory look right: torch's error about pickles
    becomes one line naming the checkpoint and the resume= that takes the complete one before it."""
    run = Run(tmp_path)
    run.save(2)
    newest = run.save(4)
    model = newest / "mp_rank_00_model_states.pt"
    with open(model, "r+b") as f:
        f.write(bytes(64))
    assert find_resumable(tmp_path) == "step_00000004"
    with pytest.raises(CheckpointError, match=r"cannot load the checkpoint \S*step_00000004 \(UnpicklingError: .*\); "
                                              r"if it is damaged, resume from the complete one before it: "
                                              r"resume=\S*step_00000002$"):
        load(FakeEngine(), newest, rank=0)
    assert load(FakeEngine(), tmp_path / "step_00000002", rank=0)["step"] == 2


def test_resume_by_name_goes_back_once_and_a_rerun_continues(tmp_path, capsys):
    """resume=<step_4> repeated (a Slurm requeue repeats the command line): the first run goes back to it, the
    reruns continue from the newest checkpoint that descends from it, also once step_4 is pruned; a checkpoint
    the run merely passed is still gone back to."""
    run = Run(tmp_path)
    for step in (2, 4, 6):
        run.save(step)
    by_name = str(tmp_path / "step_00000004")
    assert run.resolve(by_name) == tmp_path / "step_00000004"
    run.save(5)
    assert names(tmp_path / "abandoned") == ["step_00000006"]
    capsys.readouterr()
    assert run.resolve(by_name) == tmp_path / "step_00000005"
    assert capsys.readouterr().err == (f"[checkpoint] resume={by_name}: this run resumed from it before and has saved "
                                       f"{tmp_path / 'step_00000005'} since; continuing from there (to go back to it "
                                       f"again, move the later step_* directories out of {tmp_path})\n")
    run.save(7, keep=1)
    assert names(tmp_path) == ["abandoned", "latest", "step_00000007"]
    assert run.resolve(by_name) == tmp_path / "step_00000007"  # pruned, but the run came from it
    run.save(8)
    assert run.resolve(str(tmp_path / "step_00000007")) == tmp_path / "step_00000007"  # passed: going back
    with pytest.raises(CheckpointError, match="step_00000006: no such checkpoint directory"):
        run.resolve(str(tmp_path / "step_00000006"))


def test_a_checkpoint_saved_but_not_yet_in_latest_is_resumed(tmp_path, capsys):
    """What a kill between a save's manifest and `latest` leaves: step_4 complete, `latest` still naming step_2.
    The rerun resumes from step_4 instead of redoing its updates and setting it aside as another run's."""
    run = Run(tmp_path)
    run.save(2)
    run.save(4)
    atomic_write(tmp_path / "latest", "step_00000002")
    (tmp_path / ".latest.1-0123abcd.tmp").write_text("step_00000004")  # killed before its rename
    assert find_resumable(tmp_path) == "step_00000004"
    assert (f"{tmp_path / 'step_00000004'} is complete and continues step_00000002, which latest still names"
            in capsys.readouterr().err)
    assert run.resolve("auto") == tmp_path / "step_00000004"
    run.save(6)
    assert names(tmp_path) == ["latest", "step_00000002", "step_00000004", "step_00000006"]
    shutil.rmtree(tmp_path / "step_00000004")  # a leftover newer than `latest` that does not continue it
    run.save(4)
    atomic_write(tmp_path / "latest", "step_00000002")
    capsys.readouterr()
    assert find_resumable(tmp_path) == "step_00000002"


class SeeingEngine(FakeEngine):
    """Records the step directories there are when DeepSpeed's files are written, the one being written aside: the
    disk space a save has."""

    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        self.present = [name for name in names(Path(save_dir)) if name != tag]
        super().save_checkpoint(save_dir, tag, client_state, save_latest)


def test_a_lower_keep_frees_the_disk_before_the_first_save_of_the_resumed_run(tmp_path):
    """Six checkpoints (keep_checkpoints=0) filled the disk; the run resumed with keep_checkpoints=2 deletes the
    oldest four before its first save, not only after it (which a full disk never reaches)."""
    run = Run(tmp_path)
    for step in range(1, 7):
        run.save(step)
    assert run.resolve("auto") == tmp_path / "step_00000006"
    engine = SeeingEngine()
    run.save(7, engine=engine, keep=2)
    assert engine.present == ["latest", "step_00000005", "step_00000006"]
    assert names(tmp_path) == ["latest", "step_00000006", "step_00000007"]


def test_pruning_before_a_save_spares_the_checkpoint_the_run_continues(tmp_path):
    """Gone back to step_3 with keep_checkpoints=1, the first save (step_5) leaves the later step_4 in place: the
    newest before it is step_4, yet step_3 is what this run trains on from."""
    run = Run(tmp_path)
    for step in range(1, 5):
        run.save(step)
    assert run.resolve(str(tmp_path / "step_00000003")) == tmp_path / "step_00000003"
    engine = SeeingEngine()
    run.save(5, engine=engine, keep=1)
    assert engine.present == ["latest", "step_00000003", "step_00000004"]
    assert names(tmp_path) == ["latest", "step_00000005"]


def test_lineage_names_its_own_run_by_tag_and_others_by_path(tmp_path, capsys):
    """A run resumed by name from another run's checkpoint continues on the rerun of that command; moved
    elsewhere, a run directory keeps its lineage (its own checkpoints are recorded by tag)."""
    other, mine = tmp_path / "other" / "checkpoints", tmp_path / "mine" / "checkpoints"
    Run(other).save(2)
    mine_run = Run(mine)
    assert mine_run.resolve(str(other / "step_00000002")) == other / "step_00000002"
    mine_run.save(3)
    assert mine_run.resolve(str(other / "step_00000002")) == mine / "step_00000003"
    mine_run.save(4)
    assert json.loads((mine / "step_00000004" / "manifest.json").read_text())["parent"] == "step_00000003"
    moved = tmp_path / "moved" / "checkpoints"
    moved.parent.mkdir()
    os.rename(mine, moved)
    moved_run = Run(moved)
    assert moved_run.resolve(str(moved / "step_00000003")) == moved / "step_00000003"
    moved_run.save(4)
    assert names(moved / "abandoned") == ["step_00000004"]
    assert moved_run.resolve(str(moved / "step_00000003")) == moved / "step_00000004"
    assert moved_run.resolve(str(other / "step_00000002")) == moved / "step_00000004"


def test_each_trainer_keeps_its_own_lineage(tmp_path):
    """The lineage of a run's next save is the run's: another look at the same folder in the process (rundir's
    resume_step on a rerun, a second trainer of the demo) choosing by name leaves it as it was."""
    run = Run(tmp_path)
    for step in (2, 4):
        run.save(step)
    assert run.resolve("auto") == tmp_path / "step_00000004"
    assert Run(tmp_path).resolve(str(tmp_path / "step_00000002")) == tmp_path / "step_00000002"
    assert resolve(str(tmp_path / "step_00000002"), tmp_path) == tmp_path / "step_00000002"
    run.save(5)
    manifest = json.loads((tmp_path / "step_00000005" / "manifest.json").read_text())
    assert (manifest["parent"], manifest["resumed_from"]) == ("step_00000004", [])


def test_a_failed_write_of_the_manifest_or_latest_leaves_no_temporary(tmp_path):
    """A full disk (here a file-size limit: EFBIG) while `latest` or a manifest is written: the old file stays as it
    was and no temporary is left behind for nobody to find."""
    atomic_write(tmp_path / "latest", "step_00000002")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 12, hard))
    try:
        with pytest.raises(OSError, match="File too large"):
            atomic_write(tmp_path / "latest", "x" * (1 << 13))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert names(tmp_path) == ["latest"]
    assert (tmp_path / "latest").read_text() == "step_00000002"
