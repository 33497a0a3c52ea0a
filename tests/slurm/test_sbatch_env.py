"""launch/slurm/train.sbatch's environment for srun and its requeue decisions, checked without a cluster: the
script runs under bash with the variables Slurm would set and a stand-in `srun` that records what it was given
and exits with SRUN_EXIT; `scontrol` is Slurm's own (host names are Slurm's to expand), except `scontrol requeue`,
which a stand-in records and answers with REQUEUE_EXIT (after SCONTROL_GATE, if set, has appeared)."""
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from megadalle.train.distributed import slurm_hostnames

SCRIPT = Path(__file__).parent.parent.parent / "launch" / "slurm" / "train.sbatch"

FAKE_SRUN = """#!/bin/bash
{ echo "ARGS $*"; env; } > "$SRUN_RECORD"
exit "${SRUN_EXIT:-0}"
"""

FAKE_SCONTROL = """#!/bin/bash
if [ "$1" = requeue ]; then echo "$*" >> "$REQUEUE_RECORD"; exit "${REQUEUE_EXIT:-0}"; fi
if [ -n "${SCONTROL_GATE:-}" ]; then  # a slow controller: wait until the file SCONTROL_GATE exists
    touch "$SCONTROL_GATE.waiting"
    until [ -e "$SCONTROL_GATE" ]; do sleep 0.05; done
fi
exec {scontrol} "$@"
"""

STOPPED_TASKS = """#!/bin/bash
# tasks that stop on USR1 or TERM as megadalle's do (75); srun itself would SIGKILL them on TERM (137)
trap 'echo USR1 >> "$SRUN_RECORD"; exit 75' USR1
trap 'echo TERM >> "$SRUN_RECORD"; exit 137' TERM
touch "$SRUN_RECORD.started"
while :; do sleep 0.1; done
"""

STARTING_TASKS = """#!/bin/bash
# tasks still building their engine: USR1 has its default action (srun reports 138)
trap 'echo USR1 >> "$SRUN_RECORD"; exit 138' USR1
touch "$SRUN_RECORD.started"
while :; do sleep 0.1; done
"""


def signal_the_script(env, tmp_path, sig, once: str = "srun.txt.started", then=lambda: None) -> subprocess.Popen:
    """Run the script until the file `once` names appears in tmp_path (by default: its tasks have started), send
    it `sig`, call `then`, and return it finished."""
    proc = subprocess.Popen(["bash", str(SCRIPT), "model=tiny"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while not (tmp_path / once).exists():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(sig)
        then()
        proc.out, proc.err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc


def script_env(slurm_commands, tmp_path, srun_text=FAKE_SRUN, **variables):
    """The batch script's environment with stand-ins for srun and `scontrol requeue` in tmp_path/bin."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = shutil.which("scontrol", path=slurm_commands["PATH"])
    for name, text in (("srun", srun_text), ("scontrol", FAKE_SCONTROL.replace("{scontrol}", scontrol))):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = dict(slurm_commands, PATH=f"{bin_dir}:{slurm_commands['PATH']}", SRUN_RECORD=str(tmp_path / "srun.txt"),
               REQUEUE_RECORD=str(tmp_path / "requeue.txt"), SLURM_JOB_ID="1234", SLURM_JOB_NODELIST="node[1-2]")
    for name in ("SRUN_CPUS_PER_TASK", "SLURM_CPUS_PER_TASK", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS",
                 "NCCL_DEBUG", "MEGADALLE_MASTER_ADDR", "MEGADALLE_MASTER_PORT", "SLURM_RESTART_COUNT", "VERB"):
        env.pop(name, None)
    env.update(variables)
    return env


def run_script(slurm_commands, tmp_path, args=("model=tiny",), **variables):
    """Run the script in tmp_path with `args`; returns it finished, srun's environment and srun's arguments."""
    env = script_env(slurm_commands, tmp_path, **variables)
    proc = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    record = tmp_path / "srun.txt"
    lines = record.read_text().splitlines() if record.exists() else []
    seen = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("ARGS "))
    args = next((line.removeprefix("ARGS ") for line in lines if line.startswith("ARGS ")), None)
    return proc, seen, args


def requeues(tmp_path) -> list[str]:
    record = tmp_path / "requeue.txt"
    return record.read_text().splitlines() if record.exists() else []


@pytest.mark.slurm
def test_srun_gets_the_allocations_cpus_and_the_first_host_as_rendezvous(slurm_commands, tmp_path):
    proc, seen, args = run_script(slurm_commands, tmp_path, SLURM_CPUS_PER_TASK="6",
                                  SLURM_JOB_NODELIST="rack[1-2]-node[01-02]")
    assert proc.returncode == 0, proc.stderr
    assert seen["SRUN_CPUS_PER_TASK"] == "6" and seen["OMP_NUM_THREADS"] == "6"
    assert seen["MASTER_ADDR"] == "rack1-node01" and seen["MASTER_PORT"] == str(20000 + 1234)
    assert seen["NCCL_DEBUG"] == "WARN" and seen["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    assert args.endswith("--label python -u -m megadalle train resume=auto model=tiny")
    assert "rendezvous rack1-node01:21234, 6 CPUs per task" in proc.stdout


@pytest.mark.slurm
def test_the_submitting_shells_rendezvous_is_replaced_by_the_allocations(slurm_commands, tmp_path):
    """sbatch passes the submitting shell's environment on: a MASTER_ADDR/MASTER_PORT left by torchrun or an earlier
    job named a rendezvous outside this allocation."""
    proc, seen, _ = run_script(slurm_commands, tmp_path, MASTER_ADDR="10.0.0.7", MASTER_PORT="29500")
    assert proc.returncode == 0, proc.stderr
    assert seen["MASTER_ADDR"] == "node1" and seen["MASTER_PORT"] == str(20000 + 1234)


@pytest.mark.slurm
def test_a_rendezvous_asked_for_is_kept(slurm_commands, tmp_path):
    proc, seen, _ = run_script(slurm_commands, tmp_path, MEGADALLE_MASTER_ADDR="10.0.0.7",
                               MEGADALLE_MASTER_PORT="29501", MASTER_ADDR="10.9.9.9")
    assert proc.returncode == 0, proc.stderr
    assert seen["MASTER_ADDR"] == "10.0.0.7" and seen["MASTER_PORT"] == "29501" and seen["SRUN_CPUS_PER_TASK"] == "1"


@pytest.mark.slurm
@pytest.mark.parametrize("srun_exit, restarts, requeued, code", [
    ("75", "0", True, 0),     # a signal stopped the tasks (preemption's TERM, the USR1 warning): requeue
    ("0", "0", False, 0),     # the run finished: nothing to requeue
    ("1", "0", False, 1),     # it failed: requeueing would fail again
    ("75", "20", False, 75),  # MAX_RESTARTS reached
], ids=["stopped", "finished", "failed", "max-restarts"])
def test_the_job_requeues_when_the_tasks_were_stopped(slurm_commands, tmp_path, srun_exit, restarts, requeued, code):
    """A preemption with a grace period TERMs the tasks, not this script: the tasks checkpointed and exited 0, and
    the job ended COMPLETED at step 245 of 100000. Their status 75 is what makes the job requeue now."""
    proc, _, _ = run_script(slurm_commands, tmp_path, SRUN_EXIT=srun_exit, SLURM_RESTART_COUNT=restarts)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert requeues(tmp_path) == (["requeue 1234"] if requeued else []), proc.stdout


@pytest.mark.slurm
def test_a_failed_requeue_fails_the_job_and_says_how_to_resume(slurm_commands, tmp_path):
    """A job submitted with --no-requeue (or a controller that did not answer) ended with exit 0, as if finished."""
    proc, _, _ = run_script(slurm_commands, tmp_path, SRUN_EXIT="75", REQUEUE_EXIT="1")
    assert requeues(tmp_path) == ["requeue 1234"]
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert "scontrol requeue 1234 failed" in proc.stderr and "submit the same command again" in proc.stderr


@pytest.mark.slurm
@pytest.mark.parametrize("args, verb, run_dir", [
    (["model=tiny"], None, "{tmp}/outputs/transformer/slurm-1234"),
    (["run_dir=runs/a", "run_dir=/shared/runs/12b"], None, "/shared/runs/12b"),
    (["++out_dir=/shared/out", "name=big"], None, "/shared/out/transformer/big"),
    (["dvae=tiny"], "train-dvae", "{tmp}/outputs/dvae/slurm-1234"),
    (["name=c"], "train-clip", "{tmp}/outputs/clip/c"),
    (["name=c", "name=null", "run_dir=r", "run_dir=null"], None, "{tmp}/outputs/transformer/slurm-1234"),
], ids=["default", "run_dir", "out_dir-name", "dvae", "clip", "nulls"])
@pytest.mark.parametrize("requeue_fails", [False, True], ids=["max-restarts", "requeue-failed"])
def test_a_job_that_is_not_requeued_names_the_run_dir_to_resubmit_with(slurm_commands, tmp_path, args, verb, run_dir,
                                                                        requeue_fails):
    """Reaching MAX_RESTARTS ended the job with 75 and no word on resuming, and a failed requeue said "this run's
    run_dir" without naming it: the default one is the job's (slurm-<job id>), which a resubmission does not find."""
    variables = {"SRUN_EXIT": "75", **({"VERB": verb} if verb else {}),
                 **({"REQUEUE_EXIT": "1"} if requeue_fails else {"SLURM_RESTART_COUNT": "20"})}
    proc, _, _ = run_script(slurm_commands, tmp_path, args, **variables)
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert f"submit the same command again with run_dir={run_dir.format(tmp=tmp_path)} to resume from its " \
           f"checkpoint\n" in proc.stderr


@pytest.mark.slurm
@pytest.mark.parametrize("verb, runs", [(None, "train"), ("train-dvae", "train-dvae"), ("train-clip", "train-clip"),
                                        ("generate", None)])
def test_the_tasks_run_the_training_verb_that_verb_names(slurm_commands, tmp_path, verb, runs):
    """The script ran `train` alone: a train-dvae or train-clip job had no requeue on the early warning."""
    proc, _, args = run_script(slurm_commands, tmp_path, **({"VERB": verb} if verb else {}))
    if runs is None:
        assert proc.returncode == 2 and args is None
        assert "[sbatch] VERB=generate is not a training verb: train (the default), train-dvae or train-clip" \
            in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert args.endswith(f"--label python -u -m megadalle {runs} resume=auto model=tiny")


@pytest.mark.slurm
def test_a_term_to_the_script_reaches_the_tasks_as_usr1_and_does_not_requeue(slurm_commands, tmp_path):
    """`scancel --signal=TERM --batch`: the script TERMed srun, which SIGKILLs every task at once (no checkpoint).
    A user's TERM stops the run: no requeue."""
    proc = signal_the_script(script_env(slurm_commands, tmp_path, srun_text=STOPPED_TASKS), tmp_path, signal.SIGTERM)
    out, err = proc.out, proc.err
    assert (tmp_path / "srun.txt").read_text().splitlines() == ["USR1"], out + err
    assert proc.returncode == 75 and requeues(tmp_path) == [], out + err
    assert "no requeue" in out


@pytest.mark.slurm
def test_the_time_limits_warning_requeues_tasks_it_killed_before_training_began(slurm_commands, tmp_path):
    """The tasks take the stop signals from their first update: a USR1 while they build the engine or convert a
    checkpoint kills them (srun exit 138), and the job ended FAILED instead of continuing."""
    proc = signal_the_script(script_env(slurm_commands, tmp_path, srun_text=STARTING_TASKS), tmp_path, signal.SIGUSR1)
    assert len(requeues(tmp_path)) == 1 and proc.returncode == 0, proc.out + proc.err


@pytest.mark.slurm
@pytest.mark.parametrize("sig, requeued, code", [(signal.SIGUSR1, True, 0), (signal.SIGTERM, False, 75)],
                         ids=["USR1", "TERM"])
def test_a_signal_while_scontrol_expands_the_nodelist_is_handled_as_a_later_one(slurm_commands, tmp_path, sig,
                                                                                 requeued, code):
    """The traps were set after `scontrol show hostnames`, which a busy controller makes slow: a USR1 or TERM then
    killed the batch script (138, 143) and the job ended unrequeued. Now no task starts, and the job requeues on the
    warning, or stops with 75 on a user's TERM."""
    gate = tmp_path / "scontrol-gate"

    def open_the_gate():
        time.sleep(0.2)  # the signal reaches the script while scontrol runs
        gate.touch()

    proc = signal_the_script(script_env(slurm_commands, tmp_path, SCONTROL_GATE=str(gate)), tmp_path, sig,
                             once="scontrol-gate.waiting", then=open_the_gate)
    out, err = proc.out, proc.err
    assert proc.returncode == code, out + err
    assert requeues(tmp_path) == (["requeue 1234"] if requeued else []), out + err
    assert not (tmp_path / "srun.txt").exists() and "no task ran" in out, out + err


@pytest.mark.slurm
def test_an_unexpandable_nodelist_stops_before_srun(slurm_commands, tmp_path):
    proc, _, args = run_script(slurm_commands, tmp_path, SLURM_CPUS_PER_TASK="1", SLURM_JOB_NODELIST="")
    assert proc.returncode == 1 and args is None
    assert "cannot expand SLURM_JOB_NODELIST=" in proc.stderr


@pytest.mark.slurm
def test_python_side_expands_nested_ranges_through_scontrol(slurm_commands, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_commands["SLURM_CONF"])
    assert slurm_hostnames("rack[1-2]-node[01-02],login1") == [
        "rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02", "login1"]


def test_the_script_run_outside_a_job_says_to_submit_it(tmp_path):
    """`bash launch/slurm/train.sbatch ...` said only "SLURM_JOB_ID: unbound variable", twice."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.run(["bash", str(SCRIPT), "model=tiny"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (2, "[sbatch] not inside a Slurm job: submit this script with sbatch "
                                                 "(sbatch launch/slurm/train.sbatch ...)\n")


def test_the_script_picks_the_rendezvous_port_megadalle_picks():
    from megadalle.train.distributed import JOB_PORTS

    low, high = JOB_PORTS
    assert f"$(({low} + SLURM_JOB_ID % {high - low}))" in SCRIPT.read_text()
