"""A tiny open_clip architecture, randomly initialised and saved locally: open_clip as a reranker with no download.

Importing it skips the importing test module where open_clip is not installed. A helper, not a test module:
open_clip's own tests and evaluate's with an open_clip reranker load the same weights, and neither test module
should be the other's library.
"""
from __future__ import annotations

import json

import pytest
import torch


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
