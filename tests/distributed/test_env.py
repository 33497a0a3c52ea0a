"""Rank detection from each launcher's environment, and Slurm node lists (no processes started)."""
from megadalle.train.distributed import detect, expand_nodelist


def test_torchrun_and_deepspeed_variables():
    env = detect({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "MASTER_ADDR": "node7", "MASTER_PORT": "1234",
                  "SLURM_PROCID": "0", "SLURM_NTASKS": "2"})
    assert (env.rank, env.local_rank, env.world_size, env.master_addr, env.master_port, env.launcher) == \
        (3, 1, 8, "node7", 1234, "env")


def test_srun_variables_pick_first_node_and_job_port():
    env = detect({"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "4242",
                  "SLURM_STEP_NODELIST": "gpu[03-04,10],login1"})
    assert (env.rank, env.local_rank, env.world_size, env.master_addr, env.master_port, env.launcher) == \
        (5, 1, 8, "gpu03", 20000 + 4242, "slurm")


def test_no_launcher_is_one_process():
    env = detect({})
    assert (env.rank, env.world_size, env.launcher) == (0, 1, "single") and env.master_port > 0


def test_nodelist_expansion_keeps_zero_padding():
    assert expand_nodelist("a[08-11],b,c[1,3]") == ["a08", "a09", "a10", "a11", "b", "c1", "c3"]
    assert expand_nodelist("localhost") == ["localhost"]
