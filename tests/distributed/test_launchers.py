"""`megadalle train` under the deepspeed launcher (launch/train.sh, --no_local_rank) and torchrun: 2 ranks.

Ranks come from the environment only, so hydra never sees a --local_rank argument, and both
ranks write into the one run directory rank 0 chose.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megadalle.train.checkpoint_damage import damage
from megadalle.train.distributed import free_port
from tests.dvae.conftest import write_image_shards
from tests.launch_signals import stop_after_two_steps

import dist_launch as launch


def check_run(run_dir):
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]
    assert (run_dir / "checkpoints" / "latest").read_text() == "step_00000003"
    assert damage(run_dir / "checkpoints" / "step_00000003") is None
    assert {p.name for p in (run_dir / "checkpoints" / "step_00000003").glob("rng_rank*")} == \
        {"rng_rank00000.pt", "rng_rank00001.pt"}


LAUNCHERS = {
    "deepspeed": lambda port: ([str(launch.ROOT / "launch" / "train.sh")], {"NUM_GPUS": "2", "MASTER_PORT": str(port)}),
    "torchrun": lambda port: (["torchrun", "--nproc_per_node", "2", "--master_port", str(port), "-m", "megadalle",
                               "train"], {}),
}


@pytest.mark.distributed
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_launcher_trains(launcher, train_overrides, tmp_path):
    assert shutil.which(launcher), f"{launcher} is not installed"
    run_dir = tmp_path / "run"
    cmd, extra_env = LAUNCHERS[launcher](free_port())
    cmd = cmd + [*train_overrides, "trainer.grad_accum=1", f"run_dir={run_dir}"]
    done = subprocess.run(cmd, env={**launch.base_env(), **extra_env}, cwd=launch.ROOT, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    check_run(run_dir)


@pytest.mark.distributed
@pytest.mark.parametrize("sig, group", [(signal.SIGTERM, False), (signal.SIGUSR1, False), (signal.SIGINT, True)],
                         ids=["TERM", "USR1", "ctrl-c"])
def test_a_signal_to_train_sh_checkpoints_and_stops_every_rank(sig, group, train_overrides, tmp_path):
    """DeepSpeed's single-node runner forwards no signal: killed, it left both ranks training as orphans. The
    signal goes to the ranks, not to DeepSpeed's launcher, which would SIGKILL them 30 s into their checkpoint."""
    run_dir = tmp_path / "run"
    cmd, extra_env = LAUNCHERS["deepspeed"](free_port())
    cmd = cmd + [*train_overrides, "trainer.grad_accum=1", "trainer.steps=100000", "trainer.checkpoint_every=0",
                 f"run_dir={run_dir}"]
    stop_after_two_steps(cmd, {**launch.base_env(), **extra_env}, launch.ROOT, run_dir, sig, group)


STUB_PDSH = """#!/bin/bash
# pdsh -S -w HOSTS CMD: CMD here, once per host with %n replaced (ssh is no part of what is tested)
while [ $# -gt 1 ]; do case $1 in -w) hosts=$2; shift 2;; -S) shift;; -f) shift 2;; *) break;; esac; done
for h in ${hosts//,/ }; do sh -c "${1//%n/$h}"; done
"""


@pytest.mark.distributed
@pytest.mark.parametrize("hosts, launcher_args", [
    ("localhost slots=2\n", ""),
    ("localhost slots=2\nnode-b slots=2\n", " --num_nodes 1"),
    ("node-b slots=2\nlocalhost slots=2\n", " --exclude node-b"),
], ids=["one-host", "num_nodes", "exclude"])
def test_a_signal_to_train_sh_reaches_the_ranks_of_a_hostfile_that_runs_locally(hosts, launcher_args, train_overrides,
                                                                                  tmp_path):
    """DeepSpeed launches one active host of a hostfile (one line, or one left by --num_nodes or --exclude) here,
    with no pdsh: the script looked for pdsh's launchers on the hostfile's nodes, never found one, and the run
    trained to its end and exited 0."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pdsh").write_text(STUB_PDSH)
    (tmp_path / "bin" / "pdsh").chmod(0o755)
    (tmp_path / "hostfile").write_text(hosts)
    env = {**launch.base_env(), "HOSTFILE": str(tmp_path / "hostfile"), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "DS_LAUNCHER_ARGS": "--no_ssh_check" + launcher_args}
    env["PATH"] = f"{tmp_path / 'bin'}:{env['PATH']}"
    run_dir = tmp_path / "run"
    cmd = [str(launch.ROOT / "launch" / "train.sh"), *train_overrides, "trainer.grad_accum=1", "trainer.steps=100000",
           "trainer.checkpoint_every=0", f"run_dir={run_dir}"]
    stop_after_two_steps(cmd, env, launch.ROOT, run_dir, signal.SIGUSR1)


def test_train_sh_refuses_a_master_port_among_the_launcher_args():
    """Its signal forwarding finds this run's launchers by MASTER_PORT; a --master_port in DS_LAUNCHER_ARGS (which
    DeepSpeed would take) left every signal unforwarded."""
    done = subprocess.run([str(launch.ROOT / "launch" / "train.sh"), "model=tiny"], capture_output=True, text=True,
                          env={**launch.base_env(), "DS_LAUNCHER_ARGS": "--no_ssh_check --master_port 1234"})
    assert done.returncode == 2 and "MASTER_PORT=N, not --master_port" in done.stderr


def fake_deepspeed(folder, code: int = 0) -> dict:
    """A `deepspeed` script on the PATH whose shebang names a fake Python beside it, which records its arguments
    (one a line, in folder/args) and exits with `code` at once; a `-c` script (train.sh asking DeepSpeed whether a
    hostfile is multi-node) it runs with the real one. Returns train.sh's environment."""
    folder.mkdir(parents=True)
    python = folder / "python"
    python.write_text(f'#!/bin/sh\n[ "$1" != -c ] || exec "{sys.executable}" "$@"\n'
                      f'printf "%s\\n" "$@" > "$(dirname "$0")/args"\nexit {code}\n')
    (folder / "deepspeed").write_text(f"#!{python}\n\nfrom deepspeed.launcher.runner import main\nmain()\n")
    for script in (python, folder / "deepspeed"):
        script.chmod(0o755)
    return {**launch.base_env(), "PATH": f"{folder}:{launch.base_env()['PATH']}"}


@pytest.mark.parametrize("ignored, warned", [(None, False), (signal.SIGTERM, True), (signal.SIGUSR1, True)])
def test_train_sh_says_when_it_cannot_forward_a_signal_its_caller_ignores(ignored, warned, tmp_path):
    """bash cannot trap a signal ignored when it starts: such a TERM or USR1 silently never reached the ranks (a
    parent that had stopped a run in-process left TERM ignored for every script it started, and CI hung)."""
    env = fake_deepspeed(tmp_path / "bin")
    done = subprocess.run([str(launch.ROOT / "launch" / "train.sh"), "model=tiny"], capture_output=True, text=True,
                          env=env, timeout=60, preexec_fn=ignored and (lambda: signal.signal(ignored, signal.SIG_IGN)))
    assert done.returncode == 0, done.stderr
    assert ("cannot pass it on" in done.stderr) == warned, done.stderr
    assert ignored is None or f"SIG{ignored.name[3:]} was ignored" in done.stderr


def fake_run(ranks: str) -> str:
    """DeepSpeed's runner, its launcher and 2 ranks in one script, the ranks' part of the case `ranks` (`rank N`):
    the launcher starts the ranks once `ranks` exists in $GATES (INT at its default: a script's background job
    ignores it, where DeepSpeed's ranks take it), and exits with their first failure."""
    return """#!/bin/bash
case "$1" in
-m)  # the runner (`python -m deepspeed.launcher.runner`): its launcher's status
    "$0" launcher & wait $!; exit $? ;;
launcher)  # its ranks' first failure, as DeepSpeed's launcher exits with it
    touch "$GATES/launcher.started"
    until [ -e "$GATES/ranks" ]; do sleep 0.05; done
    env --default-signal=INT "$0" rank 0 & first=$!
    env --default-signal=INT "$0" rank 1 & second=$!
    wait $first; code=$?
    wait $second; [ $code != 0 ] || code=$?
    exit $code ;;
rank)
""" + ranks + """
esac
"""


STARTING_RUN = fake_run("""\
    # each stage held at a gate (a file in $GATES): the ranks take USR1/TERM/INT (as megadalle's do at their first
    # line) once `signals` exists, then train for 3 s and exit 0; a signal they take stops them with 75 and is
    # recorded.
    touch "$GATES/rank$2.started"
    until [ -e "$GATES/signals" ]; do sleep 0.05; done
    for sig in USR1 TERM INT; do trap "echo rank$2 $sig >> $GATES/record; exit 75" $sig; done
    for _ in $(seq 30); do sleep 0.1; done
    echo rank$2 finished >> "$GATES/record" ;;""")


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.time() + 30
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT], ids=["TERM", "USR1", "INT"])
@pytest.mark.parametrize("ranks", ["none", "starting"])
def test_a_signal_to_train_sh_before_the_ranks_take_theirs_stops_them_as_they_do(tmp_path, sig, ranks):
    """DeepSpeed's runner starts its launcher, which starts the ranks, which take the stop signals a moment later.
    A signal before the ranks existed was lost (the run trained to its end and exited 0); one while they started
    Python killed them. It waits for them: they stop before their first update (75). A Ctrl-C reaches them as
    TERM: an INT in a rank's start-up raises KeyboardInterrupt (130)."""
    env = fake_deepspeed(tmp_path / "bin")
    (tmp_path / "bin" / "python").write_text(STARTING_RUN)
    gates = tmp_path / "gates"
    gates.mkdir()
    proc = subprocess.Popen([str(launch.ROOT / "launch" / "train.sh"), "model=tiny"], env={**env, "GATES": str(gates)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(gates / "launcher.started", proc)
        if ranks == "starting":
            (gates / "ranks").touch()
            wait_for(gates / "rank1.started", proc)
        proc.send_signal(sig)
        time.sleep(0.3)  # the signal reaches train.sh before the ranks exist or take it
        (gates / "ranks").touch()
        (gates / "signals").touch()
        out = proc.communicate(timeout=30)[0]
    finally:  # what a failure left: the script, and the run's processes (in the runner's session) by their path
        proc.kill()
        subprocess.run(["pkill", "-KILL", "-f", str(tmp_path / "bin")])
    got = "TERM" if sig == signal.SIGINT else sig.name[3:]
    record = gates / "record"
    assert sorted(record.read_text().splitlines() if record.exists() else []) == [f"rank0 {got}", f"rank1 {got}"], out
    assert proc.returncode == 75, out


LOADING_RUN = fake_run("""\
    # ranks that hold USR1 and TERM from their first line and read a checkpoint for 10 s, their loop not yet begun:
    # a stop is recorded and ends the rank 2 s later (saving nothing) with 75; an INT raises KeyboardInterrupt, as
    # Python's own handler does before megadalle's loop takes Ctrl-C (recorded, 130)
    code=""
    for sig in USR1 TERM; do trap "echo rank$2 $sig >> $GATES/record; code=75" $sig; done
    trap "echo rank$2 INT >> $GATES/record; exit 130" INT
    touch "$GATES/rank$2.holds"
    left=100
    while [ $left -gt 0 ]; do
        sleep 0.1
        left=$((left - 1))
        [ -z "$code" ] || [ $left -le 20 ] || left=20
    done
    [ -z "$code" ] || exit $code
    echo rank$2 finished >> "$GATES/record" ;;""")


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_to_train_sh_while_the_ranks_read_a_checkpoint_stops_them_cleanly(tmp_path, presses):
    """Ranks that held TERM but had not begun their loop got a Ctrl-C as INT: KeyboardInterrupt, exit 130, and the
    launcher killed the others. It reaches them as TERM (75); a second Ctrl-C, the user insisting, as INT."""
    env = fake_deepspeed(tmp_path / "bin")
    (tmp_path / "bin" / "python").write_text(LOADING_RUN)
    gates = tmp_path / "gates"
    gates.mkdir()
    (gates / "ranks").touch()
    proc = subprocess.Popen([str(launch.ROOT / "launch" / "train.sh"), "model=tiny"], env={**env, "GATES": str(gates)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    record = gates / "record"
    try:
        wait_for(gates / "rank0.holds", proc)
        wait_for(gates / "rank1.holds", proc)
        proc.send_signal(signal.SIGINT)
        if presses == 2:
            deadline = time.time() + 30
            while not (record.exists() and record.read_text().count("TERM") == 2):
                assert proc.poll() is None and time.time() < deadline, proc.communicate()
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=30)[0]
    finally:  # what a failure left: the script, and the run's processes (in the runner's session) by their path
        proc.kill()
        subprocess.run(["pkill", "-KILL", "-f", str(tmp_path / "bin")])
    got = sorted(record.read_text().splitlines() if record.exists() else [])
    assert got == sorted(f"rank{n} {sig}" for n in (0, 1) for sig in ("TERM", "INT")[:presses]), out
    assert proc.returncode == (75 if presses == 1 else 130), out
    assert out.count("Ctrl-C again to abort without saving") == 1, out  # said once, though passed on till taken


@pytest.mark.parametrize("never_starts", [False, True], ids=["exits-3", "cannot-execute"])
def test_train_sh_fails_with_the_launchers_status_when_it_exits_at_once(tmp_path, never_starts):
    """A runner that exited before train.sh's wait loop (`setsid: failed to execute deepspeed`, a runner that
    refused its arguments) was gone for `kill -0`, and the script exited 0."""
    env = fake_deepspeed(tmp_path / "bin", code=3)
    if never_starts:  # its Python cannot be executed: setsid fails at once
        (tmp_path / "bin" / "python").write_text(f"#!{tmp_path}/no/such/interpreter\n")
    for _ in range(3):  # the runner's exit races the script's own steps: a few tries, every one must fail
        done = subprocess.run([str(launch.ROOT / "launch" / "train.sh"), "model=tiny"], capture_output=True,
                              text=True, env=env, timeout=60)
        if never_starts:
            assert done.returncode != 0 and "failed to execute" in done.stderr, done.stderr
        else:
            assert done.returncode == 3, done.stderr


def test_train_sh_runs_deepspeeds_runner_with_its_python_from_a_folder_with_a_space(tmp_path):
    """The `deepspeed` script's shebang names its Python by path, which the kernel cuts at the first space: train.sh
    starts the runner as `python -m deepspeed.launcher.runner` under that Python, whole."""
    folder = tmp_path / "My Projects" / "venv" / "bin"
    env = fake_deepspeed(folder)
    done = subprocess.run([str(launch.ROOT / "launch" / "train.sh"), "model=tiny", "name=a b"], capture_output=True,
                          text=True, env={**env, "NUM_GPUS": "2", "MASTER_PORT": "29777"}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (folder / "args").read_text().splitlines() == [
        "-m", "deepspeed.launcher.runner", "--no_local_rank", "--master_port", "29777", "--num_gpus", "2",
        "--module", "megadalle", "train", "model=tiny", "name=a b"]


@pytest.mark.parametrize("where", ["python", "cwd"])
def test_train_sh_refuses_a_multi_node_run_from_a_path_with_a_space(tmp_path, where):
    """Over pdsh DeepSpeed writes the folder and the Python's path into the remote command unquoted: every node
    failed with a shell error. A hostfile of one active host (one line, or one left by --num_nodes or --exclude,
    which the check took for several) runs no pdsh, so the same paths are fine there."""
    folder = tmp_path / ("My Projects" if where == "python" else "bin") / "bin"
    env = fake_deepspeed(folder)
    cwd = tmp_path / ("My Runs" if where == "cwd" else "runs")
    cwd.mkdir()
    for hosts, launcher_args, refused in (("node1 slots=8\n# a comment\nnode2 slots=8\n", "", True),
                                          ("node1 slots=8\n", "", False),
                                          ("node1 slots=8\nnode2 slots=8\n", "--num_nodes 1", False),
                                          ("node1 slots=8\nnode2 slots=8\n", "--exclude node2", False)):
        (tmp_path / "hostfile").write_text(hosts)
        done = subprocess.run([str(launch.ROOT / "launch" / "train.sh"), "model=tiny"], capture_output=True,
                              text=True, cwd=cwd, timeout=60,
                              env={**env, "HOSTFILE": str(tmp_path / "hostfile"), "DS_LAUNCHER_ARGS": launcher_args})
        assert (done.returncode == 2) == refused, done.stderr
        space = folder / "python" if where == "python" else cwd
        assert (f"path holding a space ({space})" in done.stderr) == refused, done.stderr


def test_train_sh_names_a_missing_hostfile(tmp_path):
    done = subprocess.run([str(launch.ROOT / "launch" / "train.sh"), "model=tiny"], capture_output=True, text=True,
                          env={**fake_deepspeed(tmp_path / "bin"), "HOSTFILE": str(tmp_path / "nope")}, timeout=60)
    assert done.returncode == 2 and f"HOSTFILE={tmp_path / 'nope'}: no such file" in done.stderr


def test_train_sh_without_deepspeed_says_so_with_its_usage(tmp_path):
    path = os.pathsep.join(d for d in launch.base_env()["PATH"].split(os.pathsep)
                           if d and not os.path.exists(os.path.join(d, "deepspeed")))
    done = subprocess.run([str(launch.ROOT / "launch" / "train.sh"), "model=tiny"], capture_output=True, text=True,
                          env={**launch.base_env(), "PATH": path}, timeout=60)
    assert done.returncode == 2
    first, usage = done.stderr.strip().splitlines()
    assert first.startswith("launch/train.sh: deepspeed is not on the PATH: activate the environment")
    assert usage.startswith("usage: [NUM_GPUS=N | HOSTFILE=FILE] [VERB=train|train-dvae|train-clip] launch/train.sh "
                            "KEY=VALUE ...")


@pytest.mark.parametrize("verb, runs", [(None, "train"), ("train", "train"), ("train-dvae", "train-dvae"),
                                        ("train-clip", "train-clip"), ("generate", None), ("", "train")])
def test_train_sh_runs_the_training_verb_that_verb_names(verb, runs, tmp_path):
    """It ran `train` alone: a multi-GPU train-dvae or train-clip had no launcher that passes on signals."""
    env = fake_deepspeed(tmp_path / "bin")
    done = subprocess.run([str(launch.ROOT / "launch" / "train.sh"), "model=tiny"], capture_output=True, text=True,
                          env={**env, **({} if verb is None else {"VERB": verb})}, timeout=60)
    if runs is None:
        assert done.returncode == 2 and not (tmp_path / "bin" / "args").exists()
        assert f"launch/train.sh: VERB={verb} is not a training verb: train (the default), train-dvae or train-clip" \
            in done.stderr
    else:
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "bin" / "args").read_text().splitlines()[-3:] == ["megadalle", runs, "model=tiny"]


@pytest.mark.distributed
def test_train_sh_trains_the_dvae_on_two_ranks_and_stops_it_on_a_signal(tmp_path):
    """VERB=train-dvae under the DeepSpeed launcher: both ranks train the dVAE in one run directory, and a USR1 to
    the script checkpoints and exits 75, as for `train`."""
    shards = tmp_path / "shards"
    write_image_shards(shards, 32, 32, 16)
    run_dir = tmp_path / "run"
    cmd = [str(launch.ROOT / "launch" / "train.sh"), f"data.shards={shards}", "data.num_workers=0", "dvae=tiny",
           "dvae.n_hid=16", "trainer.steps=100000", "trainer.micro_batch=2", "trainer.ema=null",
           "trainer.checkpoint_every=0", "trainer.log_every=1", "logger=none", f"run_dir={run_dir}"]
    env = {**launch.base_env(), "VERB": "train-dvae", "NUM_GPUS": "2", "MASTER_PORT": str(free_port())}
    stop_after_two_steps(cmd, env, launch.ROOT, run_dir, signal.SIGUSR1)
    latest = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text()
    assert {p.name for p in latest.glob("rng_rank*")} == {"rng_rank00000.pt", "rng_rank00001.pt"}
