"""Safetensors files laid out first and filled in any order read back as safetensors' own files do."""
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from megadalle.planned_safetensors import PlannedFile
from megadalle.weights import ShardedWriter, export_layout


def tensors():
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(3, 5, generator=g).to(torch.bfloat16), "b": torch.randn(7, generator=g),
            "steps": torch.tensor(11, dtype=torch.int64), "mask": torch.rand(3, 3, generator=g) > 0.5,
            "empty": torch.zeros(0, 4), "half": torch.randn(1, generator=g).half()}


def test_tensors_written_in_any_order_read_back_exactly(tmp_path):
    state = tensors()
    file = PlannedFile(tmp_path / "x.safetensors", {k: (v.shape, v.dtype) for k, v in state.items()}, {"kind": "toy"})
    for name in reversed(list(state)):
        file.write(name, state[name])
    file.close()
    back = load_file(str(tmp_path / "x.safetensors"))
    assert back.keys() == state.keys()
    assert all(back[k].dtype == v.dtype and torch.equal(back[k], v) for k, v in state.items())
    with safe_open(str(tmp_path / "x.safetensors"), "pt") as f:
        assert f.metadata() == {"kind": "toy"}
    assert file.data_start % 8 == 0
    assert all((file.data_start + file.offsets[k]) % v.element_size() == 0 for k, v in state.items())


def test_a_tensor_never_written_or_not_as_planned_is_refused(tmp_path):
    state = tensors()
    file = PlannedFile(tmp_path / "x.safetensors", {k: (v.shape, v.dtype) for k, v in state.items()})
    with pytest.raises(ValueError, match=r"b is \(7,\) torch.float16, planned \(7,\) torch.float32"):
        file.write("b", state["b"].half())
    file.write("b", state["b"])
    with pytest.raises(ValueError, match="5 tensors were never written whole"):
        file.close()
    with pytest.raises(ValueError, match="complex64"):
        PlannedFile(tmp_path / "y.safetensors", {"z": (torch.Size([2]), torch.complex64)})


def test_a_tensor_written_in_row_ranges_reads_back_whole(tmp_path):
    """A table trained in row pieces is written a piece at a time into its whole tensor (export)."""
    table = torch.randn(10, 3).to(torch.bfloat16)
    layout = {"table": (table.shape, table.dtype), "b": (torch.Size([2]), torch.float32)}
    file = PlannedFile(tmp_path / "x.safetensors", layout)
    file.write("b", torch.ones(2))
    for first, last in ((6, 10), (0, 4)):
        file.write("table", table[first:last], first)
    with pytest.raises(ValueError, match="1 tensors were never written whole, e.g. \\['table'\\]"):
        file.close()  # rows 4-5 never came
    file = PlannedFile(tmp_path / "y.safetensors", {"table": (table.shape, table.dtype)})
    for first, last in ((6, 10), (0, 4), (4, 6)):
        file.write("table", table[first:last], first)
    file.close()
    assert torch.equal(load_file(str(tmp_path / "y.safetensors"))["table"], table)
    with pytest.raises(ValueError, match=r"table at row 8 is \(4, 3\) torch.bfloat16, planned \(10, 3\)"):
        PlannedFile(tmp_path / "z.safetensors", {"table": (table.shape, table.dtype)}).write("table", table[:4], 8)


def test_an_aborted_folder_leaves_nothing(tmp_path):
    state = tensors()
    writer = ShardedWriter(tmp_path / "out", export_layout(state, torch.bfloat16), "toy", max_shard_bytes=16)
    writer.add("b", state["b"])
    writer.abort()
    assert list(tmp_path.iterdir()) == []
