"""megadalle.sample.generate's arguments from Python: numpy integers are the ints they hold, bools no counts, and
paths in place of the loaded models are refused naming the argument (hunt P4, P7)."""
from __future__ import annotations

import numpy as np
import pytest

from megadalle.config import ConfigError
from megadalle.data.tokenizer import Tokenizer
from megadalle.sample import generate
from megadalle.sampling.load import load_model
from megadalle.sampling.loop import SamplingSettings
from tests.tiny_models import write_tiny_models

PROMPT = "a red circle"


@pytest.fixture
def models(tmp_path):
    write_tiny_models(tmp_path)
    return (load_model(tmp_path / "model.safetensors", "transformer"),
            load_model(tmp_path / "dvae.safetensors", "dvae"), None, Tokenizer(tmp_path / "tokenizer.model"))


def draw(models, n=3, keep=3, batch_size=2, seed=5):
    return generate(*models, PROMPT, n, keep, batch_size, SamplingSettings(), seed, progress=False)


def test_numpy_integers_sample_as_the_ints_they_hold(models):
    """seed=np.int64(0) overflowed in the sampler's seed arithmetic."""
    plain = draw(models)
    for kind in (np.int64, np.int32, np.uint8):
        got = draw(models, kind(3), kind(3), kind(2), kind(5))
        assert got.images.equal(plain.images) and got.indices == plain.indices


@pytest.mark.parametrize("name", ["n", "keep", "batch_size", "seed"])
def test_a_bool_is_no_count_nor_seed(models, name):
    """n=True failed deep in the sampler; seed=True sampled as seed 1."""
    args = dict(n=3, keep=1, batch_size=2, seed=5) | {name: True}
    with pytest.raises(ConfigError, match=rf"^{name}=True: expected an integer, not a bool$"):
        draw(models, **args)


@pytest.mark.parametrize("slot,attribute", [(0, ".transformer"), (1, ".dvae"), (3, ".tokenizer")])
def test_paths_or_a_pipeline_in_place_of_the_models_are_refused_by_name(models, tmp_path, slot, attribute):
    """generate(model="model/transformer") and the like were AttributeErrors from deep in the sampler."""
    name = ("model", "dvae", None, "tokenizer")[slot]
    given = list(models)
    given[slot] = str(tmp_path / "x")
    with pytest.raises(ConfigError, match=rf"^{name}: expected .*, got the path '{tmp_path / 'x'}'; load it with "
                                          rf"megadalle.load_pipeline\(PATH\) and pass its \{attribute}$"):
        draw(given)
    from megadalle.bundle import Pipeline

    given[slot] = Pipeline(*models[:2], None, None, models[3], {})
    with pytest.raises(ConfigError, match=rf"^{name}: expected .*, got a Pipeline; pass its \{attribute}$"):
        draw(given)


def test_the_readme_names_the_python_settings_that_sample_as_the_cli_does():
    """README said sampling defaults to top_p 0.9, but SamplingSettings() (generate's argument) keeps every token:
    a Python caller drew other samples than the CLI without a word."""
    from pathlib import Path

    from megadalle.config.sample import GenerateConfig
    from megadalle.train.sample_grid import generate_settings

    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    assert f"`SamplingSettings(top_p={GenerateConfig.top_p})`" in readme
    assert SamplingSettings(top_p=GenerateConfig.top_p) == generate_settings()
    assert "the model's own distribution (top_p 1.0, not the CLI's 0.9)" in readme and SamplingSettings().top_p == 1.0


@pytest.mark.parametrize("typed, said", [
    ("prompt=null", "prompt=null: expected one prompt (text); for the word, write 'prompt=\"null\"'"),
    ("prompt=[a,b]", "prompt=[a,b]: hydra reads the brackets as a list, and generate takes one prompt; quote it to "
                     "keep it as text: 'prompt=\"[a,b]\"'")])
def test_a_prompt_hydra_reads_as_no_text_is_refused_with_its_quoted_form(typed, said, tmp_path, capsys):
    """OmegaConf's "Incompatible value 'None' for field of type 'str'" and "Cannot convert 'ListConfig' to string"
    gave no way out."""
    from megadalle.cli import main

    write_tiny_models(tmp_path)
    assert main(["generate", f"weights={tmp_path / 'model.safetensors'}", typed, f"output={tmp_path / 'o'}"]) == 2
    assert capsys.readouterr().err == f"megadalle generate: {said}\n"


def test_models_not_trained_together_are_refused_before_a_sample_is_drawn(models, tmp_path):
    """A dVAE of a larger codebook decoded another model's codes in silence; a dVAE given as the model got through
    to an AttributeError."""
    from megadalle.models.dvae import DVAE
    from megadalle.sampling.compatible import IncompatibleModels
    from tests.tiny_models import dvae_config

    model, dvae, _, tokenizer = models
    larger = DVAE(dvae_config(vocab_size=256))
    with pytest.raises(IncompatibleModels, match="has a codebook of 256 codes, the Transformer"):
        draw((model, larger, None, tokenizer))
    with pytest.raises(ConfigError, match="^model='DVAE': expected the Transformer; pass the Pipeline's .transformer"):
        draw((dvae, dvae, None, tokenizer))


@pytest.mark.parametrize("settings", [None, {"top_k": 5}])
def test_settings_that_are_no_sampling_settings_are_refused_naming_them(models, settings):
    """None or a dict was an AttributeError from the checks."""
    with pytest.raises(ConfigError, match="^settings: expected a megadalle.sampling.loop.SamplingSettings"):
        generate(*models, PROMPT, 2, 2, 2, settings, 0, progress=False)
