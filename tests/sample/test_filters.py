"""top-k and top-p keep exactly what they should; temperature sharpens."""
import pytest
import torch

from megadalle.sampling.filters import draw, filter_logits, sample_next, top_k_filter, top_p_filter


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = top_k_filter(logits, 2).isfinite()
    assert kept.tolist() == [[False, True, False, True, False]]
    assert top_k_filter(logits, 0).isfinite().all() and top_k_filter(logits, 9).isfinite().all()


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.1, 0.5, 0.15, 0.25]])
    logits = probs.log()
    assert top_p_filter(logits, 0.5).isfinite().tolist() == [[False, True, False, False]]
    assert top_p_filter(logits, 0.6).isfinite().tolist() == [[False, True, False, True]]
    assert top_p_filter(logits, 0.76).isfinite().tolist() == [[False, True, True, True]]
    assert top_p_filter(logits, 0.01).isfinite().sum() == 1
    with pytest.raises(ValueError, match="top_p=0"):
        top_p_filter(logits, 0.0)


def test_filtered_draws_only_hit_kept_tokens_and_temperature_sharpens():
    logits = torch.randn(64, 50)
    filtered = filter_logits(logits, temperature=0.7, top_k=5, top_p=0.9)
    tokens = draw(filtered.repeat(8, 1), torch.Generator().manual_seed(0))
    assert filtered.repeat(8, 1).gather(1, tokens[:, None]).isfinite().all()
    cold = filter_logits(logits, temperature=0.1).softmax(-1).max(-1).values
    assert (cold >= logits.softmax(-1).max(-1).values).all()
    for bad in (0, float("inf"), float("nan")):  # inf drew every token alike; nan made every logit nan
        with pytest.raises(ValueError, match=f"temperature={bad} must be positive and finite"):
            filter_logits(logits, temperature=bad)


def test_draw_follows_the_distribution_and_sample_next_stays_in_the_filtered_set():
    probs = torch.tensor([0.1, 0.6, 0.3])
    tokens = draw(probs.log().expand(20000, 3), torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.bincount(tokens, minlength=3) / 20000., probs, atol=0.015, rtol=0)
    logits = torch.randn(4000, 30)
    kept = filter_logits(logits, 0.8, top_k=6, top_p=0.7).isfinite()
    tokens = sample_next(logits, 0.8, top_k=6, top_p=0.7, generator=torch.Generator().manual_seed(1))
    assert kept.gather(1, tokens[:, None]).all()
    assert len(set(tokens[:50].tolist())) > 1


def test_a_temperature_near_zero_draws_the_most_likely_token():
    logits = torch.randn(4, 16, generator=torch.Generator().manual_seed(0)) * 5
    for temperature in (1e-3, 1e-20, 1e-40):
        assert torch.equal(sample_next(logits, temperature), logits.argmax(-1))
        assert torch.equal(sample_next(logits, temperature, top_p=0.9), logits.argmax(-1))



@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_token_tied_with_the_kth_is_drawn_as_often_as_the_filter_keeps_it(dtype):
    """The top-k candidates alone (torch.topk) left out a token tied with the k-th, never drawn, where top_k_filter
    keeps ties: bf16 logits tie at the k-th in most rows."""
    logits = torch.tensor([2.0, 1.0, 1.0, 0.0], dtype=dtype).expand(20000, 4)
    tokens = sample_next(logits, top_k=2, generator=torch.Generator().manual_seed(0))
    want = torch.tensor([2.0, 1.0, 1.0]).softmax(-1)
    torch.testing.assert_close(torch.bincount(tokens, minlength=4) / 20000., torch.cat([want, torch.zeros(1)]),
                               atol=0.015, rtol=0)


def test_rows_without_a_tie_draw_from_the_candidates_as_from_the_whole_filter():
    """The candidates are the whole filter's kept tokens, with its values: the same distribution (a row tied only at
    -inf, under a temperature near 0, keeps its most likely token)."""
    logits = torch.tensor([[0.5, 3.0, 1.0, 2.0, -1.0]]).expand(20000, 5)
    tokens = sample_next(logits, 0.8, top_k=3, top_p=0.95, generator=torch.Generator().manual_seed(2))
    want = filter_logits(logits[:1], 0.8, top_k=3, top_p=0.95).softmax(-1)[0]
    torch.testing.assert_close(torch.bincount(tokens, minlength=5) / 20000., want, atol=0.015, rtol=0)
    cold = torch.tensor([[0.0, 5.0, 1.0, 1.0]])
    assert sample_next(cold, 1e-40, top_k=2).tolist() == [1]
