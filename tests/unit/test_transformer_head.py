"""The Transformer's head against F.layer_norm and F.linear written out (hunt T8, N1).

Both segments' logits are the final LayerNorm's output times that segment's rows of the one output matrix. Text
logits that skipped the LayerNorm trained on un-normalised states and every transformer test passed, since the image
path (and so "every parameter learns") was unchanged; the norm's weight and bias are made non-identity here so a
skipped or misapplied norm shows. The LayerNorm's eps is GPT-2's and torch's default, 1e-5: checkpoints move between
machines with and without apex, and a different eps runs the same weights differently on rows of small variance.
"""
import pytest
import torch
import torch.nn.functional as F

from megadalle.models.norm import layer_norm
from megadalle.models.transformer import Head
from megadalle.models.vocab_tables import RowLinear

from .helpers import tiny_config

EPS = 1e-5
"""GPT-2's LayerNorm epsilon, also torch.nn.LayerNorm's default."""


def output_rows(head: Head) -> torch.Tensor:
    """The whole output matrix [text_vocab + image_vocab, d]: the one table, or its row pieces in order."""
    if isinstance(head.out, RowLinear):
        return head.out.weight
    return torch.cat([piece.weight for piece in head.out.pieces])


@pytest.mark.parametrize("chunk", [0, 48], ids=["whole", "pieces"])
@torch.no_grad()
def test_each_segments_logits_are_its_rows_times_the_normed_state(chunk):
    cfg = tiny_config(vocab_chunk=chunk)
    torch.manual_seed(0)
    head = Head(cfg)
    head.ln.weight.normal_(mean=2.0, std=0.5)
    head.ln.bias.normal_(mean=0.5, std=0.5)
    d, t, v = cfg.d_model, cfg.text_len, cfg.text_vocab
    h = torch.randn(2, t + cfg.grid_len, d) * 3 + 1
    w = output_rows(head)
    assert w.shape == (v + cfg.image_vocab, d)

    def expected(states, rows):
        return F.linear(F.layer_norm(states, (d,), head.ln.weight, head.ln.bias, EPS), rows)

    text_logits, image_logits = head(h)
    torch.testing.assert_close(text_logits, expected(h[:, : t - 1], w[:v]))
    torch.testing.assert_close(image_logits, expected(h[:, t - 1: -1], w[v:]))


@torch.no_grad()
def test_layer_norm_eps_is_gpt2s():
    """Rows whose variance (1e-6) is below eps: eps 1e-6 in place of 1e-5 moves every output by a factor of ~2.3."""
    torch.manual_seed(0)
    norm = layer_norm(16)
    norm.weight.normal_()
    norm.bias.normal_()
    x = 5 + 1e-3 * torch.randn(4, 16)
    torch.testing.assert_close(norm(x), F.layer_norm(x, (16,), norm.weight, norm.bias, EPS))
