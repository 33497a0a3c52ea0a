"""`megadalle export` of a ZeRO-3 run and of a 2-stage pipeline run gives the trained model's logits.

The training ranks record the logits of a probe batch from the model still inside DeepSpeed
(dist_train_worker.py); the exported safetensors, loaded into a fresh plain Transformer, must agree.
"""
import pytest
import torch

from megadalle.cli import main as cli
from megadalle.config.compose import compose
from megadalle.config.model import TransformerConfig
from megadalle.models.transformer import Transformer
from megadalle.weights import load_weights

import dist_launch as launch
from dist_train_worker import probe_batch


@pytest.mark.distributed
@pytest.mark.parametrize("layout", ["zero3", "pipe"])
def test_export_matches_trained_logits(layout, train_overrides, tmp_path):
    overrides = [*train_overrides, f"deepspeed={layout}", f"run_dir={tmp_path / 'run'}"]
    launch.run(2, {"overrides": overrides, "probe": str(tmp_path / "probe.pt")}, tmp_path / "logs",
               script="dist_train_worker.py")
    assert cli(["export", f"run={tmp_path / 'run'}", f"output={tmp_path / 'model.safetensors'}"]) == 0

    state, config = load_weights(tmp_path / "model.safetensors", kind="transformer")
    model = Transformer(TransformerConfig(**config)).eval()
    model.load_state_dict(state, strict=True)
    text, image = probe_batch(compose("train", overrides))
    with torch.no_grad():
        text_logits, image_logits = model(text, image)
    trained = torch.load(tmp_path / "probe.pt", weights_only=True)
    torch.testing.assert_close(text_logits, trained["text"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(image_logits, trained["image"], rtol=1e-5, atol=1e-5)
    untrained = Transformer(TransformerConfig(**config)).eval()
    with torch.no_grad():
        assert not torch.allclose(untrained(text, image)[1], trained["image"], atol=1e-3), "training changed nothing"
