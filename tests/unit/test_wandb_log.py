"""wandb's credentials as the installed wandb reads them, the end it records for a run, and a run that goes back."""
import json
import shutil
from types import SimpleNamespace

import pytest

from megadalle.train import wandb_log
from megadalle.train.callbacks import end_all
from megadalle.train.checkpoint import MANIFEST
from megadalle.train.signals import STOPPED_EXIT

KEY = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def home(tmp_path, monkeypatch):
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_CONFIG_DIR", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_the_netrc_entry_wandb_login_writes_for_its_default_host_is_found(home):
    """wandb 0.31's default server is api.forge.coreweave.com and `wandb login` keys ~/.netrc by it: megadalle looked
    for api.wandb.ai only and refused logger.mode=online, advising the `wandb login` the user had run."""
    from wandb.sdk.lib import urls
    from wandb.sdk.lib.wbauth import wbnetrc

    wbnetrc.write_netrc_auth(host=urls.DEFAULT_BASE_URL, api_key=KEY)  # what `wandb login` does with the key
    assert wbnetrc.read_netrc_auth(host=urls.DEFAULT_BASE_URL) == KEY
    assert wandb_log.credentials_found()


@pytest.mark.parametrize("machine", ["api.forge.coreweave.com", "api.wandb.ai"])
def test_an_entry_for_either_name_of_the_default_server_is_found(home, monkeypatch, machine):
    netrc = home / "elsewhere.netrc"
    netrc.write_text(f"machine {machine}\n  login user\n  password {KEY}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_log.credentials_found()
    assert not wandb_log.credentials_found({"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.org"})


def test_a_self_hosted_server_on_a_port_is_found_as_wandb_login_writes_it(home):
    (home / ".netrc").write_text(f"machine localhost:8080\n  login user\n  password {KEY}\n")
    assert wandb_log.credentials_found({"HOME": str(home), "WANDB_BASE_URL": "http://localhost:8080"})


class FakeRun:
    def __init__(self):
        self.calls = []

    def mark_preempting(self):
        self.calls.append("mark_preempting")

    def finish(self, exit_code=None):
        self.calls.append(("finish", exit_code))


@pytest.mark.parametrize("failing, stopped, calls", [
    (False, False, [("finish", 0)]),
    (True, False, [("finish", 1)]),
    (True, True, [("finish", 1)]),
    (False, True, ["mark_preempting", ("finish", STOPPED_EXIT)]),
])
def test_wandb_records_how_the_run_ended(failing, stopped, calls):
    """A run that failed (NaN, OOM, a data error) was finished with wandb's default exit code 0: done."""
    callback = wandb_log.Wandb(SimpleNamespace(mode="offline"))
    callback.run = run = FakeRun()
    end_all([callback], failing=failing, stopped=stopped)
    assert run.calls == calls and callback.run is None


def complete(run_dir, *steps):
    for step in steps:
        path = run_dir / "checkpoints" / f"step_{step:08d}"
        path.mkdir(parents=True)
        (path / MANIFEST).write_text(json.dumps({"files": {}}))


def test_going_back_to_an_older_checkpoint_takes_a_new_id_and_says_so(tmp_path):
    """wandb ignores the steps below a run's last one: the branch from step 12 logged into the run that had reached
    step 16, invisible there until it passed it."""
    complete(tmp_path, 12, 16)
    assert wandb_log.run_id(tmp_path, "abcd1234", 16) == ("abcd1234", None)
    wandb_id, note = wandb_log.run_id(tmp_path, "abcd1234", 12)
    assert wandb_id != "abcd1234" and note == (
        f"{tmp_path} goes back to step_00000012 from its step_00000016: it logs to a new wandb run {wandb_id}, not "
        "to abcd1234 (wandb ignores the steps below the last one a run logged)")
    (tmp_path / "checkpoints" / "abandoned").mkdir()  # the branch's first save sets the later ones aside
    (tmp_path / "checkpoints" / "step_00000016").rename(tmp_path / "checkpoints" / "abandoned" / "step_00000016")
    assert wandb_log.run_id(tmp_path, wandb_id, 14) == (wandb_id, None)


def test_the_branch_gone_back_from_keeps_its_id_before_the_new_branch_saves(tmp_path):
    """The record held the newest id alone: resuming step 16 after going back to step 12 (stopped before its first
    save) logged the old branch into the new one's id. A copy's start from its original's checkpoint keeps its id."""
    complete(tmp_path, 12, 16)
    assert wandb_log.run_id(tmp_path, "abcd1234", 16) == ("abcd1234", None)
    branch, _ = wandb_log.run_id(tmp_path, "abcd1234", 12)
    assert wandb_log.run_id(tmp_path, "abcd1234", 16) == ("abcd1234", None)
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "checkpoints", copy / "checkpoints")
    shutil.copy(tmp_path / wandb_log.ID_RECORD, copy)
    copy_id, _ = wandb_log.run_id(copy, "abcd1234", 16)
    back, note = wandb_log.run_id(copy, "abcd1234", 12)
    assert back not in (copy_id, branch, "abcd1234")  # it goes back, and says so (not "another run's checkpoint")
    assert note == (f"{copy} goes back to step_00000012 from its step_00000016: it logs to a new wandb run {back} "
                    "(wandb ignores the steps below the last one a run logged)")
    assert wandb_log.run_id(copy, "abcd1234", 16) == (copy_id, None)  # not the original's, nor its own branch's
