"""`megadalle demo`'s settings refused before any stage runs, naming the `demo.*` key to change and a value that
works: each was refused only by a later stage (after the data, the dVAE or CLIP had been made), as a traceback or
naming a key the demo sets itself (clip.image_size, trainer.micro_batch, vocab_size)."""
import dataclasses

import pytest

from megadalle import demo, demo_checks
from megadalle.config import ConfigError, build
from megadalle.config.compose import compose
from megadalle.config.demo import DemoConfig, tokenizer_minimum
from megadalle.data.tokenizer import Tokenizer, train_tokenizer


def settings(*overrides) -> DemoConfig:
    return build(DemoConfig, compose("demo", ["demo=fast", *overrides]).demo, "demo")


@pytest.fixture
def refused(tmp_path, monkeypatch, capsys):
    """`megadalle demo demo=fast ARGS`'s exit status and stderr, any stage run failing the test."""
    from megadalle.cli import main

    for stage in ("make_data", "train_models"):
        monkeypatch.setattr(demo, stage, lambda *args: pytest.fail("a stage ran on settings the demo refuses"))

    def run(*overrides):
        code = main(["demo", "demo=fast", f"output={tmp_path / 'out'}", *overrides])
        assert not (tmp_path / "out").exists()
        return code, capsys.readouterr().err

    return run


@pytest.mark.parametrize("overrides, message", [
    (["demo.text_len=12"], "demo.text_len=12 cuts captions: 'a yellow triangle at the top right' is 13 tokens under "
                           "the demo's tokenizer; set demo.text_len=13 or more"),
    (["demo.image_size=42", "demo.dvae_groups=2"],
     "demo.image_size=42: must be a multiple of 4 (whole clip=tiny patches of 4 px and the dVAE's downsampling "
     "2**(dvae_groups-1) = 2): e.g. demo.image_size=40 or 44"),
    (["demo.vocab_size=20"], "demo.vocab_size=20: the captions need at least 26 pieces"),
    (["demo.batch=1000"], "demo.batch=1000: larger than the demo's 540 training images (demo.per_scene=12 x 45 "
                          "scenes not held out); set demo.batch=540 or less"),
    (["demo.clip_batch=5000"], "demo.clip_batch=5000: larger than CLIP's 1080 pairs"),
])
def test_a_setting_no_stage_can_run_is_one_line_before_any_stage(refused, overrides, message):
    code, err = refused(*overrides)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_the_up_front_tokenizer_is_the_data_stages(tmp_path):
    """check_captions_fit judges text_len by a tokenizer trained on one caption of each training scene: the one
    the data stage trains on `per_scene` images of each is the same model, byte for byte."""
    for i, d in enumerate([settings(), settings("demo.per_scene=30", "demo.holdout=8", "demo.vocab_size=40")]):
        demo.draw_data(d, tmp_path / str(i), seed=i)
        assert demo_checks.up_front_tokenizer(d, seed=i).proto == (tmp_path / str(i) / "tokenizer.model").read_bytes()


def test_the_demos_vocabulary_minimum_is_the_tokenizers(tmp_path):
    """DemoConfig refuses a vocab_size below what sentencepiece needs of the captions: the smallest it names
    trains, one less is refused by the tokenizer itself."""
    shards = demo_checks.caption_shards(settings(), tmp_path / "shards", 0)
    Tokenizer(train_tokenizer(shards, tmp_path / "tok.model", tokenizer_minimum()).proto)
    with pytest.raises(ConfigError, match=f"set vocab_size={tokenizer_minimum()} or more"):
        train_tokenizer(shards, tmp_path / "tok.model", tokenizer_minimum() - 1)
    settings(f"demo.vocab_size={tokenizer_minimum()}")
    with pytest.raises(ConfigError, match=f"set demo.vocab_size={tokenizer_minimum()} or more"):
        settings(f"demo.vocab_size={tokenizer_minimum() - 1}")


def test_each_batch_may_be_as_large_as_its_stages_data():
    d = settings()
    assert (d.images, d.clip_pairs) == (540, 1080)
    settings("demo.dvae_batch=540", "demo.batch=540", "demo.clip_batch=1080")
    for key, value in (("dvae_batch", 541), ("batch", 541), ("clip_batch", 1081)):
        with pytest.raises(ConfigError, match=rf"demo.{key}={value}: larger than .* or less, or raise demo.per_scene"):
            settings(f"demo.{key}={value}")
    with pytest.raises(ConfigError, match=r"demo.clip_batch=541: larger than CLIP's 540 pairs.*clip_batch=540 or less"):
        settings("demo.clip_images=original", "demo.clip_batch=541")
    with pytest.raises(ConfigError, match=r"demo.clip_batch=1: .* learns nothing .* set demo.clip_batch=2 or more"):
        settings("demo.clip_batch=1")


def test_an_image_size_of_whole_patches_passes():
    for size in (40, 44):
        demo_checks.check_image_size(dataclasses.replace(settings(), image_size=size, dvae_groups=2))
