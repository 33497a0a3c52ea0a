"""Puts the stand-in apex (apex_standin/) on the path with CUDA seen as available, as in an NVIDIA container."""
import sys
from pathlib import Path

import pytest
import torch

from megadalle.models import norm

ROOT = Path(__file__).parent / "apex_standin"


def forget() -> None:
    for name in [name for name in sys.modules if name.split(".")[0] in ("apex", "fused_layer_norm_cuda")]:
        del sys.modules[name]
    norm._fused_layer_norm_class.cache_clear()


@pytest.fixture
def apex(monkeypatch):
    """Call with the extension's variant: "ok", "badcall" (fails at its call), or None (not built: noext)."""
    def use(extension: str | None) -> None:
        monkeypatch.syspath_prepend(str(ROOT))
        if extension is not None:
            monkeypatch.syspath_prepend(str(ROOT / extension))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(norm, "PROBE_DEVICE", "cpu")
        forget()

    yield use
    forget()
