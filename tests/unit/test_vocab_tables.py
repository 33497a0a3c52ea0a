"""Vocabulary tables cut into row pieces (model.vocab_chunk) compute exactly what whole tables compute."""
import pytest
import torch

from megadalle.config import ConfigError
from megadalle.models.transformer import Transformer
from megadalle.models.vocab_tables import RowLinearPieces, output_matrix, piece_rows, token_embedding, whole_tables
from megadalle.sampling.decoder import SparseDecoder

from .helpers import random_batch, tiny_config

CHUNK = 48
"""Rows per piece: cuts the tiny model's 512 text ids unevenly (10 x 48 + 32) and its 128 image codes (48, 48, 32)."""


def test_piece_rows():
    assert piece_rows(512, 0) == [512]
    assert piece_rows(512, 512) == [512]
    assert piece_rows(512, 48) == [48] * 10 + [32]
    assert piece_rows(128, 64) == [64, 64]


def whole_state(pieced: Transformer, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The whole-table state holding the same rows as `values`, a state of the pieced model (whole_tables)."""
    layout, place = whole_tables(pieced)
    whole = {name: torch.full_like(t, float("nan")) for name, t in layout.items()}
    for name, tensor in values.items():
        target, first = place(name)
        whole[target][first:first + len(tensor)] = tensor
    return whole


def twin_models():
    """A model with pieced tables and a whole-table model holding the same numbers."""
    torch.manual_seed(1)
    pieced = Transformer(tiny_config(vocab_chunk=CHUNK, dropout=0.0))
    whole = Transformer(tiny_config(dropout=0.0))
    whole.load_state_dict(whole_state(pieced, pieced.state_dict()))
    return pieced, whole


def test_whole_tables_place_every_piece_in_the_whole_models_state():
    pieced, whole = twin_models()
    layout, place = whole_tables(pieced)
    assert list(layout) == list(whole.state_dict())  # each table where its first piece stood
    assert {n: t.shape for n, t in layout.items()} == {n: t.shape for n, t in whole.state_dict().items()}
    assert place("head.out.pieces.0.weight") == ("head.out.weight", 0)
    assert place("head.out.pieces.11.weight") == ("head.out.weight", 512)  # the image segment starts a piece
    assert place("head.out.pieces.12.weight") == ("head.out.weight", 512 + 48)
    assert place("embed.text_tokens.pieces.10.weight") == ("embed.text_tokens.weight", 480)
    assert place("blocks.0.ln_attn.weight") == ("blocks.0.ln_attn.weight", 0)
    for name, tensor in whole_state(pieced, pieced.state_dict()).items():
        assert not tensor.isnan().any(), f"{name}: rows no piece filled"


def test_whole_tables_of_a_whole_model_is_the_identity():
    _, whole = twin_models()
    layout, place = whole_tables(whole)
    assert list(layout) == list(whole.state_dict())
    assert all(place(name) == (name, 0) for name in layout)


def test_tables_are_cut_and_no_piece_exceeds_the_chunk():
    pieced, whole = twin_models()
    cfg = pieced.cfg
    names = dict(pieced.named_parameters())
    assert len([n for n in names if n.startswith("embed.text_tokens.pieces.")]) == 11
    assert len([n for n in names if n.startswith("embed.image_tokens.pieces.")]) == 3
    assert len([n for n in names if n.startswith("head.out.pieces.")]) == 14, "each segment cut on its own"
    for name, p in names.items():
        if ".pieces." in name:
            assert p.shape[0] <= CHUNK, name
    assert sum(p.numel() for p in pieced.parameters()) == sum(p.numel() for p in whole.parameters())
    assert "head.out.weight" in dict(whole.named_parameters()) and cfg.vocab_chunk == CHUNK


def test_pieced_model_gives_the_whole_models_logits_loss_and_gradients():
    pieced, whole = twin_models()
    text, image = random_batch(pieced.cfg, batch=3)
    text[0, 0] = pieced.cfg.text_vocab - 1  # the last row of the last, shorter piece
    image[0, 0] = pieced.cfg.image_vocab - 1
    for a, b in zip(pieced(text, image), whole(text, image)):
        assert torch.equal(a, b)
    loss_p, _ = pieced.loss(text, image)
    loss_w, _ = whole.loss(text, image)
    assert torch.equal(loss_p, loss_w)
    loss_p.backward()
    loss_w.backward()
    grads = whole_state(pieced, {name: p.grad for name, p in pieced.named_parameters()})
    for name, p in whole.named_parameters():  # the head's backward sums over pieces in another order
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-5 * p.grad.abs().max().item(),
                                   msg=lambda m: f"{name}: {m}")


def test_pieced_model_decodes_as_the_whole_model():
    pieced, whole = twin_models()
    text, image = random_batch(pieced.cfg, batch=2)
    expected = []
    for model in (pieced, whole):
        decoder = SparseDecoder(model.eval(), 2, "cpu", torch.float32)
        expected.append(torch.stack([decoder.prefill(text)] + [decoder.step(image[:, i]) for i in range(5)]))
    assert torch.equal(*expected)


def test_a_slice_through_a_piece_is_refused_naming_the_edges():
    matrix = output_matrix(4, [10, 6], 4)
    assert isinstance(matrix, RowLinearPieces)
    assert matrix(torch.ones(2, 4), slice(10, None)).shape == (2, 6)
    with pytest.raises(ValueError, match=r"rows 0:5 cut through a piece; piece edges are \[0, 4, 8, 10, 14, 16\]"):
        matrix(torch.ones(2, 4), slice(0, 5))


def test_tables_no_longer_than_the_chunk_stay_whole_under_their_names():
    assert isinstance(token_embedding(64, 8, 64), torch.nn.Embedding)
    assert not isinstance(output_matrix(8, [40, 24], 64), RowLinearPieces)
    assert isinstance(output_matrix(8, [40, 24], 48), RowLinearPieces)


def test_negative_chunk_is_refused():
    with pytest.raises(ConfigError, match=r"model.vocab_chunk=-1: must be 0 \(whole tables\) or positive"):
        tiny_config(vocab_chunk=-1).validate()
