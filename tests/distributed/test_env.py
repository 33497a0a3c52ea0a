"""Rank detection from each launcher's environment, and Slurm node lists (no processes started).

Node lists are expanded by Slurm's `scontrol show hostnames`; here a stand-in on PATH answers (the
real one is tested in tests/slurm/test_sbatch_env.py).
"""
import pytest

from megadalle.errors import UserError
from megadalle.local_gpu import launched
from megadalle.train.distributed import detect, slurm_hostnames


@pytest.fixture
def fake_scontrol(tmp_path, monkeypatch):
    """A stand-in `scontrol` that prints two hosts and records its arguments."""
    script = tmp_path / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\nprintf "gpu03\\ngpu04\\n"\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    return tmp_path / "args"


def test_torchrun_and_deepspeed_variables():
    env = detect({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "MASTER_ADDR": "node7", "MASTER_PORT": "1234",
                  "SLURM_PROCID": "0", "SLURM_NTASKS": "2"})
    assert (env.rank, env.local_rank, env.world_size, env.master_addr, env.master_port, env.launcher) == \
        (3, 1, 8, "node7", 1234, "env")


def test_srun_variables_pick_first_node_and_job_port(fake_scontrol):
    env = detect({"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "4242",
                  "SLURM_STEP_ID": "0", "SLURM_STEP_NODELIST": "gpu[03-04,10],login1"})
    assert (env.rank, env.local_rank, env.world_size, env.master_addr, env.master_port, env.launcher) == \
        (5, 1, 8, "gpu03", 20000 + 4242, "slurm")
    assert fake_scontrol.read_text().split() == ["show", "hostnames", "gpu[03-04,10],login1"]


def test_srun_under_the_sbatch_script_takes_its_master_addr(fake_scontrol):
    env = detect({"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_STEP_ID": "0", "SLURM_JOB_NODELIST": "gpu[03-04]",
                  "MASTER_ADDR": "gpu04"})
    assert env.master_addr == "gpu04" and not fake_scontrol.exists()


def test_the_batch_script_of_several_tasks_is_refused_as_a_rank(fake_scontrol):
    """`sbatch -n2 --wrap "megadalle train"`: the batch shell has SLURM_PROCID=0 and SLURM_NTASKS=2 but no step, and
    no second rank ever starts: rank 0 waited 30 minutes at the rendezvous."""
    with pytest.raises(UserError, match=r"^SLURM_NTASKS=2 but this process is not in a job step .*start the ranks with "
                                        r"srun"):
        detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "gpu[03-04]"})


def test_the_shell_salloc_opens_on_a_node_is_one_process():
    """Slurm's interactive step (`salloc` with use_interactive_step) carries the allocation's SLURM_NTASKS and a step
    id: `train` there waited 30 minutes for ranks that never start, and `encode` wrote rank 0's share alone."""
    shell = {"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_STEP_ID": "4294967290", "SLURM_JOB_ID": "7"}
    env = detect(shell)
    assert (env.rank, env.world_size, env.launcher) == (0, 1, "single") and launched(shell) == (0, 1, 0)


def test_a_step_of_fewer_tasks_than_the_allocation_has_its_own_world():
    """`srun -n1 --preserve-env` in an allocation of 8 tasks: SLURM_NTASKS is the allocation's, the step's is 1."""
    step = {"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "1", "SLURM_STEP_ID": "3"}
    assert (detect(step).world_size, detect(step).launcher) == (1, "single")
    assert launched({**step, "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1"}).world_size == 2


@pytest.mark.parametrize("port, said", [("", None), ("x29500", "'x29500'"), ("70000", "'70000'")])
def test_a_master_port_that_is_no_port_is_one_line(port, said, fake_scontrol):
    """An empty or garbled MASTER_PORT (`export MASTER_PORT=$UNSET` in a job script) was a traceback from int()."""
    for env in ({"RANK": "0", "WORLD_SIZE": "2"}, {**SRUN_STEP, "SLURM_JOB_ID": "31999"}):
        if said is None:
            assert detect({**env, "MASTER_PORT": port}).master_port == (29500 if "RANK" in env else 20000 + 7999)
            continue
        with pytest.raises(UserError, match=f"^MASTER_PORT={said}: not a port"):
            detect({**env, "MASTER_PORT": port})


SRUN_STEP = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "2", "SLURM_STEP_ID": "0",
             "MASTER_ADDR": "gpu03"}


@pytest.mark.parametrize("env", [
    {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, SRUN_STEP, {"RANK": "", "WORLD_SIZE": "", **SRUN_STEP},
    {"RANK": "0", **SRUN_STEP}, {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": ""}, {"SLURM_PROCID": "0"}, {}])
def test_the_place_detected_is_the_one_every_other_reader_takes(env):
    """detect read the variables itself beside local_gpu.launched, which the loader, the error lines and the GPU take:
    RANK and WORLD_SIZE set empty beside srun's (an `export RANK=` in a job script), or an empty LOCAL_RANK, failed
    here with int('') where those took srun's, or local rank 0."""
    found = detect(env)
    assert (found.rank, found.world_size, found.local_rank) == launched(env)


def test_no_launcher_is_one_process_on_the_port_its_store_binds():
    """Port 0: the OS picks one as the rendezvous store binds it. A port picked free here was bound only once the
    imports and the config were done, and another run starting on the machine could take it meanwhile."""
    env = detect({})
    assert (env.rank, env.world_size, env.launcher, env.master_port) == (0, 1, "single", 0)
    assert detect({"MASTER_PORT": "29511"}).master_port == 29511
    assert detect({"MASTER_PORT": ""}).master_port == 0


def test_without_scontrol_the_error_names_the_nodelist(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match=r"SLURM_JOB_NODELIST=gpu\[01-02\]: `scontrol` is not on PATH"):
        slurm_hostnames("gpu[01-02]")


def test_exit_closes_the_process_group_even_when_a_peer_is_gone(monkeypatch):
    """A rank whose peer was killed printed a second traceback from the exit barrier, and left its group open."""
    from megadalle.train import distributed

    closed = []

    def barrier():
        raise RuntimeError("Connection closed by peer")

    monkeypatch.setattr(distributed.torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed, "barrier", barrier)
    monkeypatch.setattr(distributed.torch.distributed, "destroy_process_group", lambda: closed.append(True))
    distributed.shutdown()
    assert closed == [True]
