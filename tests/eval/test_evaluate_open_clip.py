"""`evaluate` scores with an open_clip reranker: a model folder exported with one, or `clip_model=open_clip:<arch>`
with `clip_weights`; the CLIP score is the reranker's cosine similarity, as `generate` reports it."""
from __future__ import annotations

import json

import pytest

from megadalle.cli import main
from megadalle.config.evaluate import EvaluateConfig
from megadalle.sample import generate
from megadalle.sampling.loop import SamplingSettings
from tests.imports.conftest import trained  # noqa: F401  (the tiny Transformer run, dVAE, CLIP and tokenizer)
from tests.imports.tiny_open_clip import ARCH, weights  # noqa: F401  (skips this module without open_clip)

SETTINGS = SamplingSettings(EvaluateConfig.temperature, EvaluateConfig.top_k, EvaluateConfig.top_p)


def mean_score(models, reranker, captions: list[str], n: int) -> float:
    """generate's CLIP scores of every caption's n samples (seed = the caption's index), averaged."""
    transformer, dvae, tokenizer = models
    scores = [s for i, c in enumerate(captions)
              for s in generate(transformer, dvae, reranker, tokenizer, c, n, n, n, SETTINGS, i, progress=False).scores]
    return sum(scores) / len(scores)


def test_a_model_folder_with_an_open_clip_reranker(weights, trained, tmp_path):  # noqa: F811
    import megadalle

    root, _ = weights
    run, _, dvae, _ = trained
    folder = tmp_path / "model"
    assert main(["export", f"run={run}", f"output={folder}", f"dvae_weights={dvae}", f"clip_model=open_clip:{ARCH}",
                 f"clip_weights={root / 'tiny.pt'}"]) == 0
    captions = tmp_path / "captions.txt"
    captions.write_text("red cat\nblue tree\n")
    out = tmp_path / "eval"
    assert main(["evaluate", f"weights={folder}", f"captions={captions}", "n=2", "batch_size=2", "fid=false",
                 f"output={out}", "device=cpu"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    pipe = megadalle.load_pipeline(folder)
    expected = mean_score((pipe.transformer, pipe.dvae, pipe.tokenizer), pipe.reranker, ["red cat", "blue tree"], 2)
    assert report["clip_score"] == pytest.approx(expected, rel=1e-5)


def test_clip_model_open_clip_with_clip_weights(weights, tmp_path):  # noqa: F811
    from megadalle.data.tokenizer import Tokenizer
    from megadalle.sampling.load import load_model
    from megadalle.sampling.rerank import load_open_clip
    from tests.tiny_models import write_tiny_models

    root, _ = weights
    write_tiny_models(tmp_path)
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\n")
    out = tmp_path / "eval"
    assert main(["evaluate", f"weights={tmp_path / 'model.safetensors'}", f"captions={captions}", "n=3",
                 f"clip_model=open_clip:{ARCH}", f"clip_weights={root / 'tiny.safetensors'}", f"output={out}",
                 "device=cpu", "fid=false"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    models = (load_model(tmp_path / "model.safetensors", "transformer"),
              load_model(tmp_path / "dvae.safetensors", "dvae"), Tokenizer(tmp_path / "tokenizer.model"))
    expected = mean_score(models, load_open_clip(ARCH, root / "tiny.safetensors"), ["a red circle"], 3)
    assert report["clip_score"] == pytest.approx(expected, rel=1e-5)
    assert report["config"]["clip_model"] == f"open_clip:{ARCH}"
