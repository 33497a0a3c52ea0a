"""Streaming a memory-mapped checkpoint keeps only the tensor in use resident (megadalle/train/mapped.py).

Without `drop_pages` every page read stays in the process's resident set until the mapping goes,
which is what made a ZeRO-3 export hold its fp32 masters whole; the contrast case shows the
measurement sees that.
"""
import sys
from pathlib import Path

import pytest
import torch

from megadalle.train.mapped import mapped, streamed

MIB = 1 << 20
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads RssFile from /proc (Linux)")


def file_resident() -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("RssFile:"))
    return int(line.split()[1]) * 1024


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({f"t{i}": torch.full((MIB,), float(i)) for i in range(8)}, path)  # 8 x 4 MiB
    return path


def test_streamed_tensors_give_their_pages_back(checkpoint):
    before, peak, total = file_resident(), 0, 0.0
    for _, tensor in streamed(mapped(checkpoint)):
        total += float(tensor.sum())
        peak = max(peak, file_resident() - before)
    assert total == sum(i * MIB for i in range(8))
    assert peak < 10 * MIB, f"{peak / MIB:.1f} MiB resident while streaming 32 MiB"


def test_without_dropping_every_page_read_stays(checkpoint):
    state = mapped(checkpoint)
    before = file_resident()
    for tensor in state.values():
        float(tensor.sum())
    assert file_resident() - before > 28 * MIB
