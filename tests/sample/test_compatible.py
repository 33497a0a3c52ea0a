"""Models that were not trained together are refused by name before any weights are read (`generate` here;
`evaluate` and `export` to a model folder in tests/imports/test_bundle.py, beside their trained run)."""
import dataclasses
from pathlib import Path

import pytest

from megadalle.cli import main
from megadalle.sampling.compatible import IncompatibleModels, check_compatible
from megadalle.sampling.load import load_model, model_config
from megadalle.weights import WeightsError, load_weights, save_weights
from tests.tiny_models import dvae_config, save_dvae, write_tiny_models


@pytest.fixture
def models(tmp_path) -> Path:
    write_tiny_models(tmp_path)  # a 4x4 grid of 16 codes, text_vocab 64, tokenizer of 40 pieces
    return tmp_path


def test_each_disagreement_is_named_with_both_values(models):
    model = model_config(models / "model.safetensors", "transformer")
    clip = model_config(models / "clip.safetensors", "clip")
    check_compatible(model, dvae_config(), clip, 40)
    with pytest.raises(IncompatibleModels, match=r"codes 32 px images as a 8x8 grid, the Transformer .* 4x4 grids"):
        check_compatible(model, dvae_config(image_size=32), clip, 40)
    with pytest.raises(IncompatibleModels, match=r"draws codes from 0 to 15 .* decodes 8 codes"):
        check_compatible(model, dvae_config(vocab_size=8), clip, 40)
    with pytest.raises(IncompatibleModels, match=r"tokenizer has 65 pieces, the Transformer reads 64"):
        check_compatible(model, dvae_config(), None, 65)
    with pytest.raises(IncompatibleModels, match=r"the CLIP \(c\) reads 64"):
        check_compatible(model, dvae_config(), clip, 65, {"clip": "c"})
    with pytest.raises(IncompatibleModels, match=r"the dVAE \(d\) has a codebook of 32 codes, the Transformer "
                                                 r"learnt 16 \(model.image_vocab=16\): another dVAE than its own"):
        check_compatible(model, dvae_config(vocab_size=32), clip, 40, {"dvae": "d"})  # exited 0, meaningless images
    with pytest.raises(IncompatibleModels, match="the Transformer pads captions with id 3, the tokenizer with 0"):
        check_compatible(dataclasses.replace(model, text_pad_id=3), dvae_config(), clip, 40)


def test_a_model_trained_on_the_triton_backend_samples_anywhere(tmp_path):
    from megadalle.config.model import TransformerConfig
    from megadalle.models.transformer import Transformer

    cfg = TransformerConfig(text_len=8, text_vocab=64, grid_size=4, image_vocab=16, n_layers=2, n_heads=1,
                            head_dim=16, d_model=16, conv_kernel=3, attention_pattern=["row", "column"],
                            attention_backend="triton")
    path = save_weights(tmp_path / "tri.safetensors", Transformer(cfg).state_dict(), "transformer", cfg)
    loaded = load_model(path, "transformer")
    assert all(block.attn.backend == "auto" for block in loaded.blocks) and loaded.cfg.attention_backend == "auto"


def test_generate_refuses_a_dvae_of_another_grid_before_sampling(models, capsys):
    other = save_dvae(models / "other.safetensors", dvae_config(image_size=32))
    out = models / "out"
    assert main(["generate", f"weights={models / 'model.safetensors'}", f"dvae_weights={other}", "prompt=a red circle",
                 "n=2", "keep=2", f"output={out}"]) == 2
    err = capsys.readouterr().err
    assert "not trained together" in err and str(other) in err and "Traceback" not in err
    assert not out.exists()  # refused before a sample was drawn, and the folder it made is gone again


def test_generate_refuses_a_dvae_of_a_larger_codebook_on_the_same_grid(models, capsys):
    """It was accepted: exit code 0 and pictures of codes that mean others to that dVAE."""
    other = save_dvae(models / "other.safetensors", dvae_config(vocab_size=256))
    out = models / "out"
    assert main(["generate", f"weights={models / 'model.safetensors'}", f"dvae_weights={other}", "prompt=a red circle",
                 "n=2", "keep=2", f"output={out}"]) == 2
    err = capsys.readouterr().err
    assert f"the dVAE ({other}) has a codebook of 256 codes, the Transformer ({models / 'model.safetensors'}) " \
           "learnt 16 (model.image_vocab=16)" in err and err.count("\n") == 1
    assert not out.exists()


def test_weights_of_another_kind_are_a_one_line_error(models, capsys):
    with pytest.raises(WeightsError, match="holds a 'dvae' model, not a 'transformer' model"):
        load_weights(models / "dvae.safetensors", "transformer")
    assert main(["generate", f"weights={models / 'dvae.safetensors'}", "prompt=a red circle", "n=1", "keep=1",
                 f"output={models / 'out'}"]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("key, given, said", [
    ("clip_weights", "dvae.safetensors", "holds a 'dvae' model, not a 'clip' model"),
    ("dvae_weights", "clip.safetensors", "holds a 'clip' model, not a 'dvae' model"),
    ("dvae_weights", "nowhere.safetensors", "no weights file or run directory there")])
def test_a_model_of_another_kind_or_none_is_refused_by_its_key(models, capsys, key, given, said):
    """The line named the path alone: which of the three keys held the wrong file was left to guess."""
    for verb, extra in (("generate", ["prompt=a red circle"]), ("evaluate", [f"captions={models / 'c.txt'}",
                                                                            "fid=false"])):
        (models / "c.txt").write_text("a red circle\n")
        assert main([verb, f"weights={models / 'model.safetensors'}", f"{key}={models / given}", *extra,
                     f"output={models / 'out'}"]) == 2
        assert capsys.readouterr().err == f"megadalle {verb}: {key}={models / given}: {said}\n"


def test_a_tokenizer_megadalle_cannot_use_is_a_one_line_error(models, capsys):
    """`generate tokenizer=corpus.txt` was a RuntimeError traceback, default special ids a ValueError one."""
    from tests.data.sentencepiece_models import captions, sp_model

    (models / "corpus.txt").write_text("a red circle\n")
    (models / "default.model").write_bytes(sp_model(captions(), pad_id=-1, unk_id=0, bos_id=1, eos_id=2))
    for name, expected in (("corpus.txt", "not a sentencepiece model"), ("default.model", "special ids")):
        assert main(["generate", f"weights={models / 'model.safetensors'}", f"tokenizer={models / name}",
                     "prompt=a red circle", "n=1", "keep=1", f"output={models / 'out'}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"megadalle generate: tokenizer={models / name}: {expected}") and err.count("\n") == 1
