"""Initial weights are drawn in fp32 on the CPU whatever dtype the parameters are built in (models/fp32_init.py):
deepspeed.zero.Init builds them in bf16, where torch's init drew other numbers for sizes that are no multiple of
its vectorised kernel's width, and the same seed built another model (CLIP's first loss 2.450 against 2.378). Here a
bf16 default dtype stands in for zero.Init's redirection (the distributed proof: test_clip_negatives.py's
zero3_2ranks_accum2_bf16)."""
import pytest
import torch

from megadalle.models import fp32_init, gpt_init


def built(make, dtype):
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return {name: p.detach().clone() for name, p in make().named_parameters()}
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("make", [lambda: gpt_init.Linear(5, 7), lambda: gpt_init.Embedding(7, 5),
                                  lambda: fp32_init.Linear(5, 7), lambda: fp32_init.Conv2d(3, 5, 3),
                                  lambda: fp32_init.Embedding(7, 5),
                                  lambda: torch.nn.ParameterList([gpt_init.normal_table(7, 5)])],
                         ids=["gpt-linear", "gpt-embedding", "linear", "conv", "embedding", "table"])
def test_built_in_bf16_the_weights_are_the_fp32_ones_cast(make):
    plain, bf16 = built(make, torch.float32), built(make, torch.bfloat16)
    assert plain.keys() == bf16.keys()
    for name, weights in plain.items():
        assert bf16[name].dtype == torch.bfloat16 and torch.equal(bf16[name], weights.bfloat16()), name


def test_nothing_is_drawn_on_the_meta_device():
    """plan and export build the 12B there: no draw, and torch's generator left as it was."""
    torch.manual_seed(0)
    state = torch.get_rng_state()
    with torch.device("meta"):
        gpt_init.Linear(4000, 4000)
        gpt_init.normal_table(4000, 4000)
    assert torch.equal(torch.get_rng_state(), state)
