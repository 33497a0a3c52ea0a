"""Shared test set-up: CPU-only, deterministic, GPU tests skipped where no GPU is present."""
import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import pytest  # noqa: E402
import torch  # noqa: E402

if not torch.cuda.is_available():
    # Triton reads this when a kernel is decorated, so it must be set before any test imports kernels.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_environment():
    """In-process training exports RANK, WORLD_SIZE and MASTER_* for torch.distributed; without this a
    later test that launches processes (srun, torchrun) would hand them a stale single-rank world."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine, 2 threads made a small model's step ~20x slower.
    Folders of single-process training tests use it for every test (their conftest asks for it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
