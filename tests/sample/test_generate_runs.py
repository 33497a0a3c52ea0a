"""`megadalle generate` as a run: what scores.json records, memory bounded by batch_size, and what a rerun into
the same folder may replace."""
import json

import pytest

from megadalle.cli import main
from megadalle.config.compose import compose
from megadalle.sample import run
from tests.sample.test_generate import write_tiny_models


@pytest.fixture
def models(tmp_path):
    write_tiny_models(tmp_path)
    return tmp_path


def args(models, *more):
    return [f"weights={models / 'model.safetensors'}", "prompt=a red circle", *more]


def test_the_kept_samples_are_decoded_batch_size_at_a_time(models, tmp_path, monkeypatch):
    """keep=n decoded all kept codes in one dVAE call (512 images at 256 px: ~175 GB of activations)."""
    from megadalle.models.dvae import DVAE

    sizes, real = [], DVAE.decode_codes
    monkeypatch.setattr(DVAE, "decode_codes", lambda self, codes: sizes.append(len(codes)) or real(self, codes))
    for rerank in ("true", "false"):
        sizes.clear()
        assert run(compose("generate", args(models, "n=7", "keep=7", "batch_size=3", f"rerank={rerank}",
                                            f"output={tmp_path / rerank}"))) == 0
        assert max(sizes) <= 3 and sum(sizes) == 7 * (rerank == "true") + 7, sizes
