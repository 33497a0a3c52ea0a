"""open_clip as the reranker: a randomly initialised open_clip model saved locally, loaded with no download,
scores like open_clip's own encoders, and `generate clip_model=open_clip:<arch>` reranks with it."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from megadalle.sampling.rerank import RerankerError, load_open_clip, load_reranker



def import_open_clip():
    """open_clip, also where torchvision is a CUDA build whose compiled ops cannot load into a CPU torch.

    The package registry CI installs from serves torchvision only as a CUDA build. Its `_C` library then fails
    to load (torchvision carries on without its ops), but torchvision 0.28 still registers a fake kernel for
    `torchvision::nms` and `torchvision::qnms` at import, which raises because the ops were never defined.
    open_clip needs none of them (only torchvision's Python transforms), so declaring their schemas is enough.
    The shim is the tests' own: a user gets torchvision's error, and PyTorch's CPU index serves a
    torchvision whose ops load.
    """
    try:
        import open_clip
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
        for op in ("nms", "qnms"):
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import open_clip
    return open_clip


try:
    open_clip = import_open_clip()
except ImportError as err:
    pytest.skip(f"open_clip is not installed ({err}); scripts/setup.sh dev installs it", allow_module_level=True)

ARCH = "megadalle-test-tiny"
TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny open_clip architecture (registered like a built-in one) randomly initialised, saved as a state dict."""
    root = tmp_path_factory.mktemp("open_clip")
    (root / f"{ARCH}.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(root / f"{ARCH}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH, pretrained=None)
    torch.save(model.state_dict(), root / "tiny.pt")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "tiny.safetensors"))
    return root, model.eval()


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
    from tests.sample.test_generate import write_tiny_models

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
