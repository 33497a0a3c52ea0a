"""open_clip as the reranker: a randomly initialised open_clip model saved locally, loaded with no download,
scores like open_clip's own encoders, and `generate clip_model=open_clip:<arch>` reranks with it."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from megadalle.sampling.rerank import RerankerError, load_open_clip, load_reranker
from tests.imports.tiny_open_clip import ARCH, open_clip, weights  # noqa: F401  (a fixture; skips without open_clip)


@pytest.mark.parametrize("name", ["tiny.pt", "tiny.safetensors"])
def test_scores_equal_open_clips_own_cosines(weights, name, monkeypatch):
    root, reference = weights
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reranker = load_open_clip(ARCH, root / name)
    images = torch.rand(3, 3, 16, 16)  # 16 px samples: resized to the model's 32 px, then normalised
    with torch.no_grad():
        pixels = F.interpolate(images, size=(32, 32), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
        img = reference.encode_image((pixels - mean) / std, normalize=True)
        txt = reference.encode_text(open_clip.get_tokenizer(ARCH)(["a red circle"]), normalize=True)
    torch.testing.assert_close(reranker.scores(images, "a red circle"), (img @ txt.T)[:, 0], rtol=1e-5, atol=1e-5)


def test_weights_are_required_and_must_fit(weights, tmp_path):
    root, _ = weights
    with pytest.raises(RerankerError, match="needs clip_weights=FILE"):
        load_reranker(f"open_clip:{ARCH}", None, tokenizer=None)
    with pytest.raises(RerankerError, match="unknown architecture"):
        load_open_clip("no-such-arch", root / "tiny.pt")
    torch.save({"visual.proj": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises(RerankerError, match="does not fit"):
        load_open_clip(ARCH, tmp_path / "wrong.pt")


def test_generate_reranks_with_open_clip(weights, tmp_path):
    from megadalle.cli import main
    from tests.tiny_models import write_tiny_models

    root, _ = weights
    write_tiny_models(tmp_path)
    out = tmp_path / "out"
    assert main(["generate", f"weights={tmp_path / 'model.safetensors'}", "prompt=a red circle", "n=5", "keep=2",
                 "batch_size=5", f"clip_model=open_clip:{ARCH}", f"clip_weights={root / 'tiny.safetensors'}",
                 f"output={out}"]) == 0
    report = json.loads((out / "scores.json").read_text())
    assert [k["score"] for k in report["kept"]] == sorted(report["all_scores"], reverse=True)[:2]


def test_a_model_folder_with_an_open_clip_reranker(weights, trained, tmp_path):
    import megadalle
    from megadalle.cli import main
    from megadalle.sampling.rerank import OpenClip

    root, _ = weights
    run, _, dvae, _ = trained
    folder = tmp_path / "model"
    assert main(["export", f"run={run}", f"output={folder}", f"dvae_weights={dvae}", f"clip_model=open_clip:{ARCH}",
                 f"clip_weights={root / 'tiny.pt'}"]) == 0
    pipe = megadalle.load_pipeline(folder)
    assert isinstance(pipe.reranker, OpenClip) and pipe.clip is pipe.reranker.model
    assert json.loads((folder / "bundle.json").read_text())["clip_model"] == f"open_clip:{ARCH}"
    out = tmp_path / "out"
    assert main(["generate", f"weights={folder}", "prompt=red cat", "n=2", "keep=1", "batch_size=2",
                 f"output={out}"]) == 0
    assert len(json.loads((out / "scores.json").read_text())["all_scores"]) == 2
