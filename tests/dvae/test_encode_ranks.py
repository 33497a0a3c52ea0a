"""A split encode started per node (torchrun, the deepspeed launcher, srun) puts each rank on its own GPU: every rank
encoded on cuda:0 (8 dVAEs and their batches on one GPU, 7 idle) when `auto` gave a plain `cuda`. CUDA is faked."""
import pytest
import torch

import megadalle.encode as encode
from megadalle.cli import main
from megadalle.models.dvae import DVAE, load_dvae
from megadalle.weights import save_weights

LAUNCHERS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_STEP_ID")


@pytest.fixture
def gpus(monkeypatch):
    """A machine with 8 GPUs as torch.cuda tells it; the devices made current, in order."""
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    for key in LAUNCHERS:
        monkeypatch.delenv(key, raising=False)
    return current


@pytest.mark.parametrize("env, device, expected, its_own", [
    ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3"}, "auto", "cuda:3", True),
    ({"RANK": "11", "WORLD_SIZE": "16", "LOCAL_RANK": "3"}, "cuda", "cuda:3", True),
    ({"SLURM_PROCID": "9", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_STEP_ID": "0",
      "MASTER_ADDR": "127.0.0.1"}, "auto", "cuda:1", True),
    ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3"}, "cuda:5", "cuda:5", False),
    ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3"}, "cpu", "cpu", False),
    ({}, "auto", "cuda", False)])
def test_each_rank_of_a_split_encode_loads_the_dvae_onto_its_own_gpu(tmp_path, image_shards, small_dvae_config,
                                                                     gpus, monkeypatch, env, device, expected, its_own):
    save_weights(tmp_path / "dvae.safetensors", DVAE(small_dvae_config).state_dict(), kind="dvae",
                 config=small_dvae_config)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    placed = []
    monkeypatch.setattr(encode, "load_dvae", lambda path, device: placed.append(device) or load_dvae(path))
    assert main(["encode", f"dvae_weights={tmp_path / 'dvae.safetensors'}", f"input={image_shards}",
                 f"output={tmp_path / 'tokens'}", f"device={device}"]) == 0
    assert placed == [torch.device(expected)]
    assert gpus == ([torch.device(expected)] if its_own else [])


def test_a_node_whose_ranks_see_fewer_gpus_counts_round_them(gpus, monkeypatch):
    """One GPU visible per rank (srun --gpus-per-task) is the rank's own whatever its local rank."""
    from megadalle.devices import pick_rank_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("RANK", "3")
    assert pick_rank_device("auto", 8) == torch.device("cuda", 0) and gpus == [torch.device("cuda", 0)]
