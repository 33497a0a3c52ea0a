"""CodeRevival's bookkeeping, driven by hand-made histograms: a window's counts are every update's in it (and only
its), donors are drawn in proportion to their use, and `revive_until` is the last update that may revive.

Each decoder embedding column is labelled with its code's number, so after a revival a column names the donor it
was copied from (the copy is exact there; only the encoder's logit rows get noise)."""
from types import SimpleNamespace

import pytest
import torch

from megadalle.config.dvae import DVAEConfig
from megadalle.models.dvae import DVAE
from megadalle.train.dvae import CodeRevival
from megadalle.train.param_edit import ParamEditor

VOCAB = 32
EDITOR = ParamEditor(SimpleNamespace(optimizer=None), zero_stage=0)
"""No optimizer: the edits rewrite the weights alone (test_revival.py checks Adam's moments)."""


def labelled(vocab: int = VOCAB) -> DVAE:
    """A small untrained dVAE whose decoder embedding column k holds k everywhere."""
    torch.manual_seed(0)
    model = DVAE(DVAEConfig(image_size=16, n_hid=8, n_blk_per_group=1, n_groups=2, vocab_size=vocab, n_init=8))
    with torch.no_grad():
        model.decoder.embedding.weight.copy_(torch.arange(vocab, dtype=torch.float).view(1, vocab, 1, 1))
    return model


def sources(model: DVAE) -> torch.Tensor:
    """The code each embedding column was copied from (its own number where it was left alone)."""
    return model.decoder.embedding.weight.detach()[0, :, 0, 0].round().long()


def histogram(counts: dict[int, int], vocab: int = VOCAB) -> torch.Tensor:
    out = torch.zeros(vocab, dtype=torch.long)
    for code, n in counts.items():
        out[code] = n
    return out


def code_params(model: DVAE, code: int) -> list[torch.Tensor]:
    """A code's encoder logit row and decoder embedding column: a revival overwrites them, only a dead code's (a
    live code's bias may shift: it does when the code donates)."""
    return [model.encoder.net[-1].weight.detach()[code].clone(),
            model.decoder.embedding.weight.detach()[:, code].clone()]


def test_a_code_used_at_the_first_update_of_a_window_is_live_at_its_end_and_dead_in_the_next():
    """Counts add up over the window's updates: code 7, chosen only at the window's first update, is live when
    the window ends (a histogram of the last update alone would overwrite it). The next window starts from
    zero: code 7, unused in all of it, is revived at its end."""
    model, every = labelled(), 4
    revival = CodeRevival(VOCAB, every, until=100, seed=0)
    kept = code_params(model, 7)
    first = [revival.after_update(model, EDITOR, step, histogram({0: 5, 1: 5, 7: 1} if step == 0 else {0: 5, 1: 5}))
             for step in range(every)]
    assert first == [0, 0, 0, VOCAB - 3]
    assert all(torch.equal(a, b) for a, b in zip(kept, code_params(model, 7))), "code 7 was used in the window"
    assert sources(model)[7] == 7
    second = [revival.after_update(model, EDITOR, step, histogram({0: 5, 1: 5})) for step in range(every, 2 * every)]
    assert second == [0, 0, 0, VOCAB - 2]
    assert sources(model)[7] in (0, 1), "unused in the second window, code 7 is a live code's copy"


def binomial_range(n: int, p: float, tail: float = 1e-6) -> tuple[int, int]:
    """The smallest [lo, hi] with P(X < lo) <= tail and P(X > hi) <= tail for X ~ Binomial(n, p)."""
    probs = torch.distributions.Binomial(n, probs=torch.tensor(p, dtype=torch.float64)).log_prob(
        torch.arange(n + 1, dtype=torch.float64)).exp()
    return int((probs.cumsum(0) <= tail).sum()), n - int((probs.flip(0).cumsum(0) <= tail).sum())


@pytest.mark.parametrize("vocab, uses", [(VOCAB, (1000, 1)), (1024, (3, 1))])
def test_donors_are_drawn_in_proportion_to_their_use(vocab, uses):
    """With codes 0 and 1 live, each of the other vocab - 2 codes copies code 0 with probability
    uses[0] / sum(uses), independently: the number that do is binomial. 1000:1 puts nearly every copy on code 0
    (a uniform draw would put half on code 1); 3:1 over 1022 draws tells use from any flatter weighting."""
    model = labelled(vocab)
    revival = CodeRevival(vocab, every=1, until=100, seed=0)
    assert revival.after_update(model, EDITOR, 0, histogram(dict(enumerate(uses)), vocab)) == vocab - 2
    donors = sources(model)[2:]
    assert set(donors.tolist()) <= {0, 1}, "donors are live codes"
    lo, hi = binomial_range(vocab - 2, uses[0] / sum(uses))
    assert lo <= int((donors == 0).sum()) <= hi, (lo, hi)


def test_revive_until_is_the_last_update_that_revives():
    """`revive_until` = 3 with a revival window of one update: updates 1-3 (steps 0-2) revive, update 4 (step 3,
    one past it) and later do not."""
    model = labelled()
    revival = CodeRevival(VOCAB, every=1, until=3, seed=0)
    revived = [revival.after_update(model, EDITOR, step, histogram({0: 5})) for step in range(5)]
    assert revived == [VOCAB - 1, VOCAB - 1, VOCAB - 1, 0, 0]
