"""Group keys that interpolate other groups' keys resolve against the whole config, as hydra resolves them."""
import pytest

from megadalle.config import ConfigError, build
from megadalle.config.compose import compose
from megadalle.config.model import TransformerConfig
from megadalle.config.train import TrainerConfig

TINY = ["data=synthetic", "model=tiny", "trainer=tiny", "logger=none"]


def test_a_group_key_resolves_a_full_path_into_its_own_group_and_others():
    cfg = compose("train", [*TINY, "trainer.lr=${trainer.min_lr}", "trainer.min_lr=1e-5", "seed=3",
                            "trainer.warmup_steps=${seed}", "model.n_layers=${model.n_heads}"])
    trainer, model = build(TrainerConfig, cfg.trainer, "trainer"), build(TransformerConfig, cfg.model, "model")
    assert (trainer.lr, trainer.warmup_steps, model.n_layers) == (1e-5, 3, model.n_heads)


def test_an_interpolation_to_no_key_names_the_key_that_holds_it():
    cfg = compose("train", [*TINY, "trainer.lr=${trainer.nope}"])
    with pytest.raises(ConfigError, match=r"^trainer\.lr: Interpolation key 'trainer.nope' not found$"):
        build(TrainerConfig, cfg.trainer, "trainer")

