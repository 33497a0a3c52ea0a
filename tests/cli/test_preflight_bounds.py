"""The boundaries of two preflight refusals, each checked at the value that must still pass and one past it:
a tokenizer exactly as large as model.text_vocab fits (every piece id is below it), and a ZeRO++ secondary
partition of size 1 is no secondary copy at all, so an EMA swapped in for validation stays allowed."""
import pytest

from megadalle.config.compose import compose
from megadalle.preflight.probes import PreflightError
from megadalle.preflight.train_verbs import check_ema_swap, check_train
from tests.cli.preflight_run import TINY

TOKENIZER_PIECES = 40
"""The size of the cli fixtures' tokenizer (tests/cli/conftest.token_shards)."""


def train_cfg(token_shards, *overrides):
    shards, tok = token_shards
    return compose("train", [*TINY, f"data.shards={shards}", f"data.tokenizer={tok}", *overrides])


def test_a_text_vocab_as_large_as_the_tokenizer_is_accepted_and_one_smaller_refused(token_shards):
    check_train(train_cfg(token_shards, f"model.text_vocab={TOKENIZER_PIECES}"))
    with pytest.raises(PreflightError, match=f"model.text_vocab={TOKENIZER_PIECES - 1}: the tokenizer .* has "
                                             f"{TOKENIZER_PIECES} pieces"):
        check_train(train_cfg(token_shards, f"model.text_vocab={TOKENIZER_PIECES - 1}"))


@pytest.mark.parametrize("hpz, refused", [(1, False), (2, True)])
def test_an_ema_validated_is_refused_only_with_a_secondary_partition_of_two_or_more(token_shards, hpz, refused):
    cfg = train_cfg(token_shards, "trainer.ema=0.9", "trainer.eval_every=2",
                    f"+deepspeed.extra.zero_optimization.zero_hpz_partition_size={hpz}")
    if refused:
        with pytest.raises(PreflightError, match=f"zero_hpz_partition_size={hpz}: with trainer.ema=0.9"):
            check_ema_swap(cfg)
    else:
        check_ema_swap(cfg)
