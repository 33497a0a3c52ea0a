"""Fixtures shared by tests/distributed and tests/slurm: the tiny token data set and train overrides."""
import pytest

from dist_tokens import make_token_data


@pytest.fixture(scope="session")
def token_data(tmp_path_factory):
    """(token shards, tokenizer model) for the tiny Transformer (8x8 grid, image vocab 128)."""
    return make_token_data(tmp_path_factory.mktemp("token_data"))


@pytest.fixture
def train_overrides(token_data):
    """`megadalle train` overrides for a few CPU steps of the tiny Transformer (add run_dir=...)."""
    shards, tok = token_data
    return [f"data.shards={shards}", f"data.tokenizer={tok}", "data.num_workers=0", "model=tiny", "trainer=tiny",
            "trainer.steps=3", "trainer.micro_batch=2", "trainer.grad_accum=2", "logger=none"]
