"""What the CLIP rerankers are fed (hunt L2, L3): a bf16 CLIP scores float32 decodes, images that are not float
[N, 3, H, W] in [0, 1] are refused naming the argument, and an image is cropped and resized as training's loader
does (data/images.resize_center_crop), not squashed or resized bilinear."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from megadalle.data.images import resize_center_crop, to_float_chw
from megadalle.data.tokenizer import Tokenizer
from megadalle.demo_data import all_scenes, render
from megadalle.sample import generate
from megadalle.sampling.load import load_model
from megadalle.sampling.loop import SamplingSettings
from megadalle.sampling.rerank import MegadalleClip, RerankerError
from tests.tiny_models import write_tiny_models

PROMPT = "a red circle"


@pytest.fixture
def models(tmp_path):
    write_tiny_models(tmp_path)  # CLIP reads 16 px, text_len 8
    return tmp_path


def scenes(size: int, n: int = 16) -> list:
    rng = random.Random(0)
    return [render(scene, size, rng) for scene in all_scenes()[:n]]


def as_batch(images) -> torch.Tensor:
    return torch.stack([torch.from_numpy(to_float_chw(image)) for image in images])


def test_a_bf16_clip_reranks_float32_samples(models):
    """It failed after the first batch was sampled: `Input type (torch.FloatTensor) and weight type
    (CPUBFloat16Type) should be the same`."""
    tok = Tokenizer(models / "tokenizer.model")
    transformer = load_model(models / "model.safetensors", "transformer")
    dvae = load_model(models / "dvae.safetensors", "dvae")
    half = load_model(models / "clip.safetensors", "clip", dtype="bf16")
    result = generate(transformer, dvae, half, tok, PROMPT, 4, 2, 2, SamplingSettings(), 5, progress=False)
    assert len(result.scores) == 4 and all(np.isfinite(result.scores))
    images = as_batch(scenes(16, 4))
    full = MegadalleClip(load_model(models / "clip.safetensors", "clip"), tok).scores(images, PROMPT)
    scores = MegadalleClip(half, tok).scores(images, PROMPT)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, full, atol=0.05, rtol=0)


@pytest.mark.parametrize("change, expected", [
    (lambda x: x * 255, r"images with values from .* to .*: expected floats \[N, 3, H, W\] in \[0, 1\] \(pixels "
                        r"0\.\.255 as images / 255\)"),
    (lambda x: (x * 255).to(torch.uint8), r"images of dtype torch.uint8: expected floats"),
    (lambda x: x[0], r"images of shape \[3, 16, 16\]: expected floats \[N, 3, H, W\]"),
    (lambda x: x.permute(0, 2, 3, 1), r"images of shape \[4, 16, 16, 3\]: expected"),
    (lambda x: x.numpy(), r"images: a ndarray, expected"),
], ids=["0..255", "uint8", "one image", "channels last", "numpy"])
def test_images_that_are_not_floats_in_0_1_are_refused_by_name(models, change, expected):
    """0..255 floats scored wrong in silence; the others failed deep in the model, naming neither."""
    reranker = MegadalleClip(load_model(models / "clip.safetensors", "clip"), Tokenizer(models / "tokenizer.model"))
    images = as_batch(scenes(16, 4))
    with pytest.raises(RerankerError, match=expected):
        reranker.scores(change(images), PROMPT)


def test_ids_longer_than_the_clips_text_len_are_refused_by_name(models):
    clip = load_model(models / "clip.safetensors", "clip")
    with pytest.raises(ValueError, match=r"text of shape \[1, 12\]: expected ids \[N, L\] with L at most text_len=8"):
        clip.score(as_batch(scenes(16, 1)), torch.full((1, 12), 5))


@pytest.mark.parametrize("box", [(0, 0, 32, 32), (0, 4, 32, 28), (4, 0, 28, 32)], ids=["square", "wide", "tall"])
def test_the_reranker_resizes_and_crops_as_training_reads_images(box):
    """CLIP at 16 px reads 32 px samples as the loader reads 32 px images at 16 (PIL bicubic, antialiased, centred
    square). Measured here: 0.0004 mean apart; bilinear was 0.0056 apart on square images and squashing 0.029 on
    non-square ones (on the hunt's JPEG shards, which the loader decodes at reduced scale, 0.0048 against 0.0077)."""
    from megadalle.models.clip import square_input

    images = [image.crop(box) for image in scenes(32)]
    expected = as_batch(resize_center_crop(image, 16) for image in images)
    got = square_input(as_batch(images), 16)
    assert got.shape == expected.shape and got.min() >= 0 and got.max() <= 1
    assert (got - expected).abs().mean() < 0.002


def test_a_non_square_image_scores_as_its_centre(models):
    """A 32x48 image was squashed to the square (0.625 where its centre scored 0.771 in the hunt)."""
    reranker = MegadalleClip(load_model(models / "clip.safetensors", "clip"), Tokenizer(models / "tokenizer.model"))
    wide = torch.nn.functional.pad(as_batch(scenes(16, 4)), (8, 8, 0, 0), value=1.0)
    torch.testing.assert_close(reranker.scores(wide, PROMPT), reranker.scores(wide[..., 8:24], PROMPT))


def test_a_clip_reading_larger_images_than_the_samples_is_said_to_upscale_them(models, capsys):
    """train-clip refuses upscaled data and evaluate says so of real images; reranking upscaled samples was silent."""
    import dataclasses

    from megadalle.cli import main
    from megadalle.models.clip import CLIP
    from megadalle.sampling.load import model_config
    from megadalle.weights import save_weights
    from tests.tiny_models import trained_with

    cfg = dataclasses.replace(model_config(models / "clip.safetensors", "clip"), image_size=32)
    save_weights(models / "clip32.safetensors", CLIP(cfg).state_dict(), "clip", cfg)
    trained_with(models / "clip32.safetensors", models / "tokenizer.model")
    assert main(["generate", f"weights={models / 'model.safetensors'}", f"clip_weights={models / 'clip32.safetensors'}",
                 f"prompt={PROMPT}", "n=2", "keep=1", f"output={models / 'out'}"]) == 0
    assert (f"[megadalle] warning: the CLIP ({models / 'clip32.safetensors'}) reads 32 px images, the dVAE "
            f"({models / 'dvae.safetensors'}) decodes 16 px samples: they are upscaled for it, blurrier than the "
            "images it trained on") in capsys.readouterr().err.splitlines()
