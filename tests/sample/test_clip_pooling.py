"""CLIP's caption feature is the text tower's state at the caption's last real token, whatever its length.

Under causal attention only that position has read the whole caption and nothing else (CLIP reads its EOT token);
the first pad after it has read a pad too, and the pads' count then moves every feature of a short caption: the
reranker would score the prompt as CLIP never saw a caption in training.
"""
import torch

from megadalle.config.clip import ClipConfig
from megadalle.models.clip import CLIP

TINY = ClipConfig(text_len=8, text_vocab=50, text_width=32, text_layers=2, text_heads=2, image_size=16,
                  patch_size=8, vision_width=16, vision_layers=1, vision_heads=2, embed_dim=16)
LENGTHS = [1, 3, 5, 7, 8]
"""Real tokens of each caption: one alone, some short ones, one pad short of text_len, and no pad at all."""


def captions() -> torch.Tensor:
    """Ids [len(LENGTHS), text_len]: each caption's tokens (never the pad id), then pads."""
    g = torch.Generator().manual_seed(0)
    text = torch.full((len(LENGTHS), TINY.text_len), TINY.text_pad_id)
    for row, n in enumerate(LENGTHS):
        text[row, :n] = torch.randint(1, TINY.text_vocab, (n,), generator=g)
    return text


def every_position(tower, text: torch.Tensor) -> torch.Tensor:
    """The tower's projected state at each position [N, L, embed_dim], layer by layer: no pooling."""
    x = tower.tok(text) + tower.pos[: text.shape[1]]
    for block in tower.blocks:
        x = block(x, causal=True)
    return tower.proj(tower.ln(x))


@torch.no_grad()
def test_the_text_feature_is_the_state_at_the_last_real_token():
    model = CLIP(TINY).eval()
    text = captions()
    states = every_position(model.text, text)
    expected = torch.stack([states[row, n - 1] for row, n in enumerate(LENGTHS)])
    torch.testing.assert_close(model.text(text), expected)


@torch.no_grad()
def test_pads_after_a_caption_do_not_change_its_feature():
    """The prompt is scored padded to CLIP's text_len: its feature must be the unpadded caption's."""
    model = CLIP(TINY).eval()
    text = captions()
    for row, n in enumerate(LENGTHS):
        torch.testing.assert_close(model.encode_text(text[row:row + 1]), model.encode_text(text[row:row + 1, :n]))
