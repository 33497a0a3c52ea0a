"""glibc set to keep freed memory (megadalle/train/cpu_malloc.py): a CPU dVAE update stops faulting its
buffers in again, environment settings win, and the trainer applies it on the CPU unless told not to."""
import os
import subprocess
import sys

import pytest

from megadalle.config.compose import compose
from megadalle.train import cpu_malloc
from megadalle.train.dvae import train_dvae

UPDATES = r"""
import resource, sys, torch
from megadalle.config.dvae import DVAEConfig
from megadalle.models.dvae import DVAE
from megadalle.models.dvae_loss import elbo_loss
from megadalle.train.cpu_malloc import keep_freed_memory

torch.set_num_threads(2)  # as the demo trains: two threads allocate per-thread buffers too
if sys.argv[1] == "keep":
    assert keep_freed_memory() is None
torch.manual_seed(0)
model = DVAE(DVAEConfig(image_size=32, n_hid=64, n_blk_per_group=1, n_groups=3, vocab_size=128, n_init=32))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
images = torch.rand(8, 3, 32, 32)
for step in range(18):
    if step == 8:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    logits, stats = model(images, 1.0)
    loss, _ = elbo_loss(images, logits, stats, 1.0, 0.1)
    opt.zero_grad()
    loss.backward()
    opt.step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def faults_per_update(mode: str) -> float:
    """Minor page faults per update of the demo's dVAE (batch 8, 32 px, two threads) in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    proc = subprocess.run([sys.executable, "-c", UPDATES, mode], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return float(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_kept_memory_stops_the_page_faults_of_every_update():
    default, kept = faults_per_update("default"), faults_per_update("keep")
    print(f"minor page faults per update: glibc's default {default:.0f}, freed memory kept {kept:.0f}")
    assert default > 1000 and kept < default / 10


def test_an_allocator_chosen_in_the_environment_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert cpu_malloc.keep_freed_memory() == "MALLOC_MMAP_THRESHOLD_ is set in the environment"
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert cpu_malloc.keep_freed_memory() == "jemalloc is preloaded"


@pytest.mark.parametrize("keep", [True, False])
def test_the_trainer_applies_it_on_the_cpu_unless_told_not_to(keep, monkeypatch, tmp_path, image_shards):
    calls = []
    monkeypatch.setattr(cpu_malloc, "keep_freed_memory", lambda: calls.append(1))
    train_dvae(compose("train-dvae", [f"data.shards={image_shards}", "data.num_workers=0", "dvae=tiny",
                                      "dvae.n_hid=16", "trainer.steps=1", "trainer.micro_batch=4", "logger=none",
                                      f"run_dir={tmp_path / 'run'}", f"trainer.keep_freed_memory={keep}"]))
    assert calls == ([1] if keep else [])
