"""The Transformer's objective weighs the text cross-entropy 1/8 and the image cross-entropy 7/8 (the DALL-E paper,
section 2.2): the image tokens are what the model is for, and the weights set how much of the gradient the captions
get. A test that only checked `loss == text_loss_weight * text + image_loss_weight * image` passed with any weights;
these compute both cross-entropies by hand from the logits and weigh them with the paper's numbers."""
import pytest
import torch

from megadalle.config import build
from megadalle.config.compose import compose
from megadalle.config.model import TransformerConfig
from megadalle.models.transformer import Transformer

from .helpers import random_batch

PAPER_TEXT, PAPER_IMAGE = 1 / 8, 7 / 8


def hand_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log softmax(logits)[target] per row, from exp and sum: no torch cross-entropy."""
    logits = logits.double()
    shifted = logits - logits.max(dim=-1, keepdim=True).values
    log_z = shifted.exp().sum(dim=-1).log()
    return log_z - shifted.gather(-1, targets[..., None]).squeeze(-1)


@pytest.mark.parametrize("size", ["tiny", "small", "1b", "12b"])
def test_every_model_group_weighs_text_an_eighth_and_image_seven_eighths(size):
    """No group overrides the paper's weights, and the schema's defaults are the paper's."""
    cfg = build(TransformerConfig, compose("plan", [f"model={size}"]).model, "model")
    assert (cfg.text_loss_weight, cfg.image_loss_weight) == (PAPER_TEXT, PAPER_IMAGE)
    assert (TransformerConfig.text_loss_weight, TransformerConfig.image_loss_weight) == (PAPER_TEXT, PAPER_IMAGE)


def test_the_loss_is_an_eighth_of_the_text_token_mean_plus_seven_eighths_of_the_image_mean():
    """Captions of different lengths: the text mean runs over the non-pad targets only."""
    cfg = build(TransformerConfig, compose("plan", ["model=tiny"]).model, "model")
    model = Transformer(cfg).eval()
    text, image = random_batch(cfg, batch=3)
    text[1, 5:] = cfg.text_pad_id  # a shorter caption than the others' 13 tokens
    with torch.no_grad():
        text_logits, image_logits = model(text, image)
        loss, parts = model.loss(text, image)
    targets = text[:, 1:]
    kept = targets != cfg.text_pad_id
    text_mean = hand_cross_entropy(text_logits, targets)[kept].mean()
    image_mean = hand_cross_entropy(image_logits, image).mean()
    assert float(parts["text_loss"]) == pytest.approx(float(text_mean), rel=1e-5)
    assert float(parts["image_loss"]) == pytest.approx(float(image_mean), rel=1e-5)
    assert float(loss) == pytest.approx(float(text_mean / 8 + 7 * image_mean / 8), rel=1e-5)
    assert abs(float(text_mean) - float(image_mean)) > 0.1, "equal parts would not tell the weights apart"
