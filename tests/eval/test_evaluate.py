"""`megadalle evaluate`: FID and KID as their definitions, CLIP score as generate's scores, JSON + Markdown,
a local feature extractor (a small random network registered by the test: nothing is downloaded)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from megadalle.cli import main
from megadalle.config import build
from megadalle.config.clip import ClipConfig
from megadalle.config.compose import compose
from megadalle.config.data import PrepareConfig
from megadalle.config.dvae import DVAEConfig
from megadalle.config.evaluate import EvaluateConfig
from megadalle.config.model import TransformerConfig
from megadalle.data.prepare import prepare
from megadalle.data.tokenizer import Tokenizer, train_tokenizer
from megadalle.data.shards import iter_samples
from megadalle.demo_data import all_scenes, write_dataset
from megadalle.evaluate import real_features
from megadalle.fidelity import (FeatureExtractorError, REGISTRY, feature_extractor, frechet_distance,
                                kernel_distance, register_feature_extractor)
from megadalle.models.clip import CLIP
from megadalle.models.dvae import DVAE
from megadalle.models.transformer import Transformer
from megadalle.sample import generate
from megadalle.sampling.load import load_model
from megadalle.sampling.loop import SamplingSettings
from megadalle.weights import save_weights


def test_frechet_distance_matches_closed_forms():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, -2.0, 0.5, 0.0])
    assert frechet_distance(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    a, b = rng.normal(1.0, 2.0, (400, 1)), rng.normal(-1.0, 0.5, (300, 1))
    va, vb = a.var(ddof=1), b.var(ddof=1)
    expected = (a.mean() - b.mean()) ** 2 + va + vb - 2 * np.sqrt(va * vb)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_the_sqrtm_formula():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(60, 5)), rng.normal(0.3, 1.5, size=(40, 5)) @ rng.normal(size=(5, 5))
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    diff = a.mean(0) - b.mean(0)
    expected = diff @ diff + np.trace(ca) + np.trace(cb) - 2 * np.trace(np.real(linalg.sqrtm(ca @ cb)))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_kernel_distance_is_the_unbiased_mmd_with_the_cubic_kernel():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.5, 1.0, size=(7, 3))
    k = lambda u, v: (u @ v / 3 + 1) ** 3  # noqa: E731
    m = len(x)
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    across = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m ** 2
    mean, std = kernel_distance(x, y, subsets=3, subset_size=m)  # a full subset is a permutation: same value
    assert mean == pytest.approx(within - 2 * across, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    assert kernel_distance(x, x, subsets=1, subset_size=m)[0] < mean


def test_the_inception_extractor_needs_a_local_weights_file(tmp_path):
    with pytest.raises(FeatureExtractorError, match="^feature_weights is not set: .*or fid=false to measure without "
                                                    "FID/KID$"):
        feature_extractor("inception", None)
    with pytest.raises(FeatureExtractorError, match=f"^feature_weights={tmp_path / 'pt.pth'}: no such file: "):
        feature_extractor("inception", str(tmp_path / "pt.pth"))
    with pytest.raises(FeatureExtractorError, match="unknown"):
        feature_extractor("nope", None)


class RandomFeatures(nn.Module):
    """A stand-in for Inception: a fixed random conv net, 8 features per image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    @torch.no_grad()
    def forward(self, images):
        return self.net(images.float())


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Image shards of demo scenes (32 px), a tokenizer and random tiny Transformer, dVAE and CLIP beside it."""
    root = tmp_path_factory.mktemp("evaluate")
    write_dataset(root / "raw", all_scenes()[:6], per_scene=2, size=32, seed=0)
    prepare(PrepareConfig(input=str(root / "raw"), output=str(root / "shards"), image_size=32, format="png",
                          min_side=8, num_workers=0), progress=False)
    train_tokenizer(root / "shards", root / "tokenizer.model", vocab_size=40)
    model_cfg = build(TransformerConfig, compose("train", ["model=tiny"]).model, "model")
    save_weights(root / "model.safetensors", Transformer(model_cfg).state_dict(), kind="transformer", config=model_cfg)
    dvae_cfg = DVAEConfig(image_size=32, n_hid=8, n_blk_per_group=1, n_groups=3, vocab_size=128, n_init=8)
    save_weights(root / "dvae.safetensors", DVAE(dvae_cfg).state_dict(), kind="dvae", config=dvae_cfg)
    clip_cfg = build(ClipConfig, {**compose("train-clip", ["clip=tiny"]).clip, "text_vocab": 40, "text_len": 10,
                                  "image_size": 32}, "clip")
    save_weights(root / "clip.safetensors", CLIP(clip_cfg).state_dict(), kind="clip", config=clip_cfg)
    if "random-test" not in REGISTRY:
        register_feature_extractor("random-test", lambda weights: RandomFeatures())
    return root


def test_evaluate_writes_clip_score_fid_and_kid(models, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["evaluate", f"weights={models / 'model.safetensors'}", f"shards={models / 'shards'}", "n=3",
            "max_captions=4", "batch_size=3", "feature_extractor=random-test", "kid_subsets=5", f"output={out}",
            "device=cpu"]
    assert main(args) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["captions"] == 4 and report["samples_per_caption"] == 3 and report["real_images"] == 12
    assert report["fid"] > 0 and np.isfinite(report["kid"]) and report["feature_extractor"] == "random-test"
    table = (out / "metrics.md").read_text()
    assert "| FID |" in table and "| CLIP score (all samples) |" in table and "| FID |" in capsys.readouterr().out
    assert report["samples"] == 12 and "| samples (CLIP score, FID) | 12 |" in table
    assert "FID of 12 samples against 12 real images: biased upward at few samples, comparable only with FIDs of " \
           "the same counts, not with published figures of 30,000 samples." in table

    # the CLIP scores are generate's, caption by caption with the caption's seed, at evaluate's default sampling
    model = load_model(models / "model.safetensors", "transformer")
    dvae, clip = load_model(models / "dvae.safetensors", "dvae"), load_model(models / "clip.safetensors", "clip")
    tok = Tokenizer(models / "tokenizer.model")
    captions = [s["txt"].splitlines()[0] for s in iter_samples(models / "shards", ["txt"])][:4]
    settings = SamplingSettings(EvaluateConfig.temperature, EvaluateConfig.top_k, EvaluateConfig.top_p)
    runs = [generate(model, dvae, clip, tok, c, 3, 3, 3, settings, i, progress=False)
            for i, c in enumerate(captions)]
    scores = [s for r in runs for s in r.scores]
    assert report["clip_score"] == pytest.approx(sum(scores) / len(scores), rel=1e-5)
    means = np.array([np.mean(r.scores) for r in runs])  # the caption is the unit, not the sample
    assert report["clip_score_se"] == pytest.approx(means.std(ddof=1) / 2, rel=1e-4)
    assert f"| CLIP score (all samples) | {report['clip_score']:.4f} ± {report['clip_score_se']:.4f} |" in table
    assert report["clip_score_best"] == pytest.approx(sum(max(r.scores) for r in runs) / 4, rel=1e-5)
    fakes = torch.cat([RandomFeatures()(r.images) for r in runs]).numpy()
    reals = real_features(str(models / "shards"), 32, 100, RandomFeatures(), 5).numpy()
    assert report["fid"] == pytest.approx(frechet_distance(reals, fakes), rel=1e-6)


def test_other_real_images_under_the_same_path_are_not_done_already(models, tmp_path, capsys):
    """The settings key named real= by path alone: real images replaced by others under that path reused the old
    FID and KID as "done already". Their files' names, sizes and modification times are in the key now."""
    real, out = tmp_path / "real", tmp_path / "eval"
    shutil.copytree(models / "shards", real)
    args = ["evaluate", f"weights={models / 'model.safetensors'}", f"shards={models / 'shards'}", f"real={real}",
            "n=1", "max_captions=2", "feature_extractor=random-test", "kid_subsets=1", "kid_subset_size=2",
            f"output={out}", "device=cpu"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0 and "done already (same settings)" in capsys.readouterr().out
    shutil.rmtree(real)
    shutil.copytree(models / "shards", real, copy_function=shutil.copy)  # other files: new modification times
    assert main(args) == 2
    assert f"output={out}: holds an earlier evaluate's results" in capsys.readouterr().err


def test_samples_are_featurised_batch_size_at_a_time(models, tmp_path):
    """The n samples of a caption went through the feature extractor in one call (Inception on evaluate n=512 at
    once), and were decoded in one call too: both go batch_size at a time."""
    sizes, net = [], RandomFeatures()
    REGISTRY["sizes-test"] = lambda weights: lambda images: sizes.append(len(images)) or net(images)
    try:
        assert main(["evaluate", f"weights={models / 'model.safetensors'}", f"shards={models / 'shards'}", "n=5",
                     "max_captions=2", "batch_size=2", "feature_extractor=sizes-test", "kid_subsets=2",
                     "kid_subset_size=4", f"output={tmp_path / 'eval'}", "device=cpu"]) == 0
    finally:
        del REGISTRY["sizes-test"]
    assert max(sizes) == 2 and sum(sizes) == 2 * 5 + 12, sizes  # the samples, then the 12 real images


def test_evaluate_from_a_captions_file_without_real_images(models, tmp_path, capsys):
    """FID and KID need real images: a captions file without `real=` used to report them as n/a, unasked."""
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\n\nsomething blue\n")
    out = tmp_path / "eval"
    args = ["evaluate", f"weights={models / 'model.safetensors'}", f"captions={captions}", "n=2", f"output={out}",
            "device=cpu", "save_samples=true"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == ("megadalle evaluate: fid=True: FID and KID compare the samples with "
                                               "real images, and captions=FILE brings none: give real=IMAGE_SHARDS, "
                                               "or fid=false")
    assert not out.exists()
    assert main([*args, "fid=false"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["captions"] == 2 and report["fid"] is None and report["clip_score"] is not None
    index = json.loads((out / "samples" / "index.json").read_text())
    assert [e["caption"] for e in index] == ["a red circle", "something blue"]
    assert index[1]["files"] == ["0001_000.png", "0001_001.png"]
    assert index[1]["order"] == "CLIP score, best first", "the files go by CLIP rank, not by sample number"
    from PIL import Image
    assert Image.open(out / "samples" / "0001_001.png").size == (32, 32), "the image itself, no frame"


def test_evaluate_refuses_both_or_neither_caption_source(models, tmp_path, capsys):
    assert main(["evaluate", f"weights={models / 'model.safetensors'}", f"output={tmp_path}"]) == 2
    assert "captions=None" in capsys.readouterr().err


def test_evaluate_samples_in_the_dtype_asked(models, tmp_path, monkeypatch):
    import megadalle.evaluate

    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\n")
    seen, real = [], megadalle.evaluate.generate
    monkeypatch.setattr(megadalle.evaluate, "generate", lambda model, *args, **kwargs:
                        seen.append(next(model.parameters()).dtype) or real(model, *args, **kwargs))
    for dtype in ("bf16", "auto"):
        assert main(["evaluate", f"weights={models / 'model.safetensors'}", f"captions={captions}", "n=2",
                     f"output={tmp_path / dtype}", "device=cpu", f"dtype={dtype}", "fid=false"]) == 0
    assert seen == [torch.bfloat16, torch.float32]  # auto is fp32 on the CPU


@pytest.mark.parametrize("rows", [0, 1])
def test_fid_and_kid_refuse_fewer_than_two_rows_by_name(rows):
    few, many = np.ones((rows, 3)), np.random.default_rng(0).normal(size=(5, 3))
    for a, b in ((few, many), (many, few)):
        with pytest.raises(ValueError, match=f"FID needs at least 2 rows in each feature set, got {len(a)} and "
                                             f"{len(b)}"):
            frechet_distance(a, b)
        with pytest.raises(ValueError, match=f"KID needs at least 2 rows in each feature set, got {len(a)} and "
                                             f"{len(b)}"):
            kernel_distance(a, b, subsets=2)


@pytest.fixture
def no_models(monkeypatch):
    """A check that must come before any model is read: reading one fails the test."""
    import megadalle.sampling.load

    def refuse(*args, **kwargs):
        raise AssertionError("a model was read before the check")

    monkeypatch.setattr(megadalle.sampling.load, "load_model", refuse)


def refused(capsys, args: list[str]) -> str:
    """`megadalle evaluate ARGS` must fail with one line of stderr (no traceback); returns that line."""
    assert main(["evaluate", "device=cpu", "feature_extractor=random-test", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def token_shards(folder):
    """A token-shard folder (codes.npy + txt), as `encode` writes: captions, but no images."""
    from megadalle.data.shards import ShardWriter

    with ShardWriter(folder) as writer:
        for i in range(3):
            writer.write({"__key__": f"{i:04d}", "codes.npy": np.zeros((4, 4), np.uint16), "txt": f"caption {i}"})
    return folder


def test_real_images_are_checked_before_any_model_is_read(models, tmp_path, capsys, no_models):
    weights, captions = f"weights={models / 'model.safetensors'}", tmp_path / "captions.txt"
    captions.write_text("a red circle\n")
    tokens, empty = token_shards(tmp_path / "tokens"), tmp_path / "empty"
    empty.mkdir()
    err = refused(capsys, [weights, f"captions={captions}", f"real={tokens}", f"output={tmp_path / 'a'}"])
    assert f"real={tokens}: no image field among" in err and "token shards" in err
    err = refused(capsys, [weights, f"shards={tokens}", f"output={tmp_path / 'b'}"])  # FID against `shards`
    assert f"shards={tokens}: no image field among" in err
    err = refused(capsys, [weights, f"captions={captions}", f"real={empty}", f"output={tmp_path / 'c'}"])
    assert err.startswith(f"megadalle evaluate: real={empty}: ")
    err = refused(capsys, [weights, f"shards={empty}", f"output={tmp_path / 'd'}"])
    assert err.startswith(f"megadalle evaluate: shards={empty}: ")


def test_fid_and_kid_with_fewer_than_two_samples_or_real_images_are_refused_up_front(models, tmp_path, capsys,
                                                                                   no_models):
    weights, shards = f"weights={models / 'model.safetensors'}", f"shards={models / 'shards'}"
    err = refused(capsys, [weights, shards, "n=1", "max_captions=1", f"output={tmp_path}"])
    assert "n=1" in err and "at least 2" in err and "fid=false" in err
    err = refused(capsys, [weights, shards, "max_real=1", f"output={tmp_path}"])
    assert "max_real=1" in err and "at least 2" in err
    err = refused(capsys, [weights, shards, "kid_subset_size=1", f"output={tmp_path}"])
    assert "kid_subset_size=1" in err and "at least 2" in err
    one = tmp_path / "one.txt"
    one.write_text("a red circle\n")
    err = refused(capsys, [weights, f"captions={one}", f"real={models / 'shards'}", "n=1", f"output={tmp_path}"])
    assert "n=1" in err and str(one) in err


def test_an_unusable_output_is_refused_before_any_model_is_read(models, tmp_path, capsys, no_models):
    captions, afile = tmp_path / "captions.txt", tmp_path / "afile"
    captions.write_text("a red circle\n")
    afile.write_text("")
    for output in (afile, afile / "under"):
        err = refused(capsys, [f"weights={models / 'model.safetensors'}", f"captions={captions}", f"output={output}",
                               "fid=false"])
        assert f"output={output}: a file is in the way" in err


def test_bad_captions_files_are_refused_before_any_model_is_read(models, tmp_path, capsys, no_models):
    blank, latin = tmp_path / "blank.txt", tmp_path / "latin.txt"
    blank.write_text("\n   \n\n")
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    for path, reason in ((blank, "every line is blank"), (tmp_path, "a directory"), (latin, "not UTF-8")):
        err = refused(capsys, [f"weights={models / 'model.safetensors'}", f"captions={path}",
                               f"output={tmp_path / 'o'}", "fid=false"])
        assert f"captions='{path}'" in err and reason in err


def test_a_captions_files_byte_order_mark_is_no_part_of_its_first_caption(tmp_path):
    """Notepad and Excel start UTF-8 files with a BOM; `prepare` drops it, so evaluate must too (the first caption
    would otherwise start with U+FEFF, which strip() keeps and some tokenizer normalisations turn into a piece)."""
    from megadalle.evaluate import read_captions

    captions = tmp_path / "captions.txt"
    captions.write_bytes("\ufeffa red circle\na blue square\n".encode("utf-8"))
    assert read_captions(EvaluateConfig(weights="w", captions=str(captions))) == ["a red circle", "a blue square"]


def test_shard_captions_are_each_samples_first_non_blank_line(tmp_path, capsys):
    from megadalle.data.shards import ShardWriter
    from megadalle.evaluate import read_captions, shard_captions

    with ShardWriter(tmp_path / "shards") as writer:
        for i, txt in enumerate(["\n  a red circle  \nsecond", " \n\n", "a blue square", "", "a green tree"]):
            writer.write({"__key__": f"{i:04d}", "txt": txt})
    cfg = EvaluateConfig(weights="w", shards=str(tmp_path / "shards"), max_captions=2)
    assert read_captions(cfg) == ["a red circle", "a blue square"]
    assert capsys.readouterr().err == ""  # said by the read that counts, once the tokenizer is known
    assert shard_captions(str(tmp_path / "shards"), 2) == ["a red circle", "a blue square"]
    assert "1 of the first 3 samples" in capsys.readouterr().err  # the blank one, said and counted
    assert shard_captions(str(tmp_path / "shards"), 64) == ["a red circle", "a blue square", "a green tree"]
    assert "2 of the first 5 samples" in capsys.readouterr().err


def test_a_missing_weights_path_is_named_as_generate_names_it(tmp_path, capsys):
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\n")
    err = refused(capsys, ["weights=/nope", f"captions={captions}", f"output={tmp_path / 'o'}"])
    assert err == "megadalle evaluate: weights=/nope: no such path"


def test_device_and_clip_model_are_checked_as_generate_checks_them(models, tmp_path, capsys):
    from megadalle.config import ConfigError

    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\n")
    err = refused(capsys, [f"weights={models / 'model.safetensors'}", f"captions={captions}", "device=bogus",
                           "fid=false"])
    assert "device='bogus': expected auto, cpu, cuda or cuda:N" in err
    with pytest.raises(ConfigError, match="clip_model='nope': expected megadalle or open_clip:<arch>"):
        EvaluateConfig(weights="w", captions=str(captions), clip_model="nope", fid=False).validate()


def test_real_images_smaller_than_the_dvae_input_are_counted(tmp_path, capsys):
    """Thumbnails in real image tars from elsewhere are upscaled into blurry references: evaluate says how many."""
    import webdataset as wds

    from tests.data.conftest import jpeg_bytes

    (tmp_path / "real").mkdir()
    with wds.TarWriter(str(tmp_path / "real" / "00000.tar")) as sink:
        for i, size in enumerate([(32, 32), (16, 16), (40, 32), (20, 24)]):
            sink.write({"__key__": f"r{i}", "jpg": jpeg_bytes(size, i), "txt": f"real {i}"})
    assert real_features(str(tmp_path / "real"), 32, 3, RandomFeatures(), 2).shape[0] == 3
    assert f"[evaluate] {tmp_path / 'real'}: 1 of the 3 real images were smaller than the dVAE's input (32 px) and " \
           "upscaled to it" in capsys.readouterr().err
    real_features(str(tmp_path / "real"), 16, 4, RandomFeatures(), 2)
    assert "upscaled" not in capsys.readouterr().err


def test_a_prepared_folder_with_a_held_out_split_is_named_on_stderr(models, tmp_path, capsys):
    """shards=<prepare output> scores its training samples (captions, and FID's reals) while <output>/val, the
    held-out split, sat beside them unused and unmentioned."""
    import shutil

    shards = shutil.copytree(models / "shards", tmp_path / "shards")
    shutil.copytree(models / "shards", shards / "val")
    args = ["evaluate", f"weights={models / 'model.safetensors'}", "n=2", "max_captions=1", "fid=false",
            f"output={tmp_path / 'eval'}", "device=cpu"]
    assert main([*args, f"shards={shards}"]) == 0
    note = (f"[evaluate] shards={shards} reads its training samples, not its held-out split {shards / 'val'}: pass "
            f"shards={shards / 'val'} to score samples the model did not train on\n")
    assert capsys.readouterr().err.count(note) == 1
    assert main([*args, f"shards={shards / 'val'}", "overwrite=true"]) == 0
    assert "held-out split" not in capsys.readouterr().err


def test_max_captions_counts_the_shards_captions_the_tokenizer_reads(models, tmp_path, capsys):
    """Shards were read to their max_captions-th caption before the tokenizer dropped the unreadable ones: a caption
    of U+FFFD alone made max_captions=3 score 2 of shards that held more."""
    from megadalle.data.shards import ShardWriter

    with ShardWriter(tmp_path / "captions") as writer:
        for i, txt in enumerate(["a red circle", "\ufffd\ufffd", "a blue square", "", "a red square", "a red circle"]):
            writer.write({"__key__": f"{i:04d}", "txt": txt})
    out = tmp_path / "eval"
    assert main(["evaluate", f"weights={models / 'model.safetensors'}", f"shards={tmp_path / 'captions'}", "n=1",
                 "max_captions=3", "fid=false", "save_samples=true", f"output={out}", "device=cpu"]) == 0
    err = capsys.readouterr().err
    assert "1 of the first 4 captions hold nothing the tokenizer reads" in err
    assert err.count("1 of the first 5 samples have no caption") == 1
    assert json.loads((out / "metrics.json").read_text())["captions"] == 3
    index = json.loads((out / "samples" / "index.json").read_text())
    assert [e["caption"] for e in index] == ["a red circle", "a blue square", "a red square"]


def test_fid_of_too_few_samples_is_refused_after_the_unreadable_captions_are_dropped(models, tmp_path, capsys):
    """The count was checked before the tokenizer dropped a caption: one sample left was drawn and scored, then
    numpy's traceback."""
    (tmp_path / "captions.txt").write_text("a red circle\n\ufffd\n")
    out = tmp_path / "eval"
    assert main(["evaluate", f"weights={models / 'model.safetensors'}", f"captions={tmp_path / 'captions.txt'}",
                 f"real={models / 'shards'}", "n=1", "feature_extractor=random-test", f"output={out}",
                 "device=cpu"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"megadalle evaluate: n=1: 1 caption(s) of {tmp_path / 'captions.txt'} x n=1 is 1 sample(s); FID and KID "
        "need at least 2 (raise n, or fid=false)")
    assert not out.exists()


def test_the_notes_speak_only_of_the_spreads_the_table_holds():
    """With fid=false the note spoke of KID's standard deviation beside a KID of n/a."""
    from megadalle.evaluate import Scores

    clip_only = Scores(2, 1, 2, clip_score=0.2, clip_score_se=0.01).notes()
    assert clip_only == ["CLIP score ± its standard error over the 2 captions (a caption's samples are no independent "
                         "draws)."]
    both = Scores(2, 1, 2, clip_score=0.2, clip_score_se=0.01, fid=3.0, kid=0.1, kid_std=0.01, real_images=4).notes()
    assert both[0].endswith("draws); KID ± its standard deviation over subsets.") and both[1].startswith("FID of 2 ")
    kid_only = Scores(1, 2, 2, fid=3.0, kid=0.1, kid_std=0.01, real_images=4).notes()
    assert kid_only[0] == "KID ± its standard deviation over subsets."
