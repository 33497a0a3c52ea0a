"""Root seeds are refused outside the range of the generators they seed, by every verb that takes one; derived
seeds stay in torch's range whatever the root seed."""
import pytest
import torch

from megadalle.config import ConfigError, build
from megadalle.config.data import TokenizerConfig
from megadalle.config.demo import DemoRunConfig
from megadalle.config.dvae import TrainDVAEConfig
from megadalle.config.evaluate import EvaluateConfig
from megadalle.config.train import RunConfig
from megadalle.seeds import derived_seed

ROOTS = {"train, train-clip": (RunConfig, {}), "train-dvae": (TrainDVAEConfig, {}),
         "tokenizer": (TokenizerConfig, {"input": "shards", "output": "t.model"}), "demo": (DemoRunConfig, {}),
         "evaluate": (EvaluateConfig, {"captions": __file__, "weights": "model", "fid": False})}
"""Each verb's schema of its root seed, with the keys it requires."""


@pytest.mark.parametrize("verb", ROOTS)
@pytest.mark.parametrize("seed", [-1, 2**63, 2**64])
def test_a_root_seed_numpy_or_torch_cannot_take_is_refused_naming_it(verb, seed):
    """seed=-1 stopped a run at numpy's first generator, seed=2**64 at torch's, each with a traceback."""
    schema, required = ROOTS[verb]
    build(schema, {**required, "seed": 2**63 - 1}, "")
    with pytest.raises(ConfigError, match=rf"^seed={seed}: must be in \[0, 2\*\*63\)"):
        build(schema, {**required, "seed": seed}, "")


def test_the_largest_root_seed_seeds_every_generator_it_reaches():
    seed = 2**63 - 1
    torch.manual_seed(seed + 1 + 7)  # a rank's own seed: the root seed plus 1 plus its rank
    for index in (0, 1, 2**40):
        torch.Generator().manual_seed(derived_seed(seed, index))


def test_a_derived_seed_within_torchs_range_is_what_it_was():
    assert derived_seed(7, 3) == 7 * 1_000_003 + 3
    assert derived_seed(2**44, 5) == (2**44 * 1_000_003 + 5) % 2**64
