"""The launcher's rank, world size and local rank, read from one launcher's variables by every reader."""
import pytest

from megadalle.data.loader import rank_and_world
from megadalle.local_gpu import launched, local_rank

TORCHRUN = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
SRUN = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "2"}


@pytest.mark.parametrize("env, expected", [
    ({}, (0, 1, 0)), (TORCHRUN, (3, 4, 1)), (SRUN, (5, 8, 2)), ({**SRUN, **TORCHRUN}, (3, 4, 1)),
    ({"RANK": "1", "WORLD_SIZE": "2"}, (1, 2, 0)), ({"RANK": "", "WORLD_SIZE": "", **SRUN}, (5, 8, 2))])
def test_the_first_launcher_giving_a_rank_and_a_world_size_gives_all_three(env, expected):
    assert launched(env) == expected and local_rank(env) == expected[2]


def test_a_rank_left_without_its_world_size_takes_nothing_from_its_launcher(monkeypatch):
    """RANK alone (srun's step holding a RANK from elsewhere): the rank and world size were srun's, the local rank
    torchrun's LOCAL_RANK default, 0, so rank 5 of its node used GPU 0."""
    env = {"RANK": "0", "SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "5"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", *SRUN):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert rank_and_world() == (5, 8) and local_rank() == 5
