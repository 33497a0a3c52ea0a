"""One intra-op thread for the evaluation tests (the shared machine has 2 cores)."""
import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here on one intra-op thread (tests/conftest.py says why)."""
