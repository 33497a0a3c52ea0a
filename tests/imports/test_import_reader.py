"""import-dvae's own pickle reader (megadalle/models/import_dalle.py), on tiny files torch.save writes here: it reads
tensors as torch would without running the file, so each way torch lays a tensor out must give torch's values."""
import io
import pickle

import pytest
import torch

from megadalle.models.import_dalle import LEGACY_MAGIC, NotADalleFile, named_tensors, read_dalle_file


def module():
    """An admitted module class (torch's Identity) holding views of a larger storage: a slice (an offset) and a
    strided one, as a tensor sliced out of another is saved (its whole storage, with the view's offset and
    stride), and a tensor of its own."""
    storage = torch.arange(12, dtype=torch.float32) * 1.5 - 4
    m = torch.nn.Identity()
    m.register_buffer("sliced", storage[3:7])
    m.register_buffer("strided", storage[1:].view(1, 11)[:, ::3].t())
    m.register_buffer("own", torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
    return m


@pytest.mark.parametrize("legacy", [False, True])
def test_views_of_a_larger_storage_are_read_with_their_offset_and_stride(tmp_path, legacy):
    m = module()
    assert m.sliced.storage_offset() == 3 and m.strided.stride() == (3, 11)
    torch.save(m, tmp_path / "m.pkl", _use_new_zipfile_serialization=not legacy)
    read = dict(named_tensors(read_dalle_file(tmp_path / "m.pkl")))
    assert read.keys() == {"sliced", "strided", "own"}
    for name, tensor in m.named_buffers():
        assert torch.equal(read[name], tensor), name


def legacy_bytes(m, **sys_info_edit) -> bytes:
    """`m` torch.saved in the legacy format, its sys_info pickle (the third) rewritten with `sys_info_edit`."""
    buffer = io.BytesIO()
    torch.save(m, buffer, _use_new_zipfile_serialization=False)
    buffer.seek(0)
    assert pickle.load(buffer) == LEGACY_MAGIC
    pickle.load(buffer)
    start = buffer.tell()
    sys_info = pickle.load(buffer)
    rest = buffer.read()
    for key, value in sys_info_edit.items():
        if value is None:
            del sys_info[key]
        else:
            sys_info[key] = value
    return buffer.getvalue()[:start] + pickle.dumps(sys_info, protocol=2) + rest


def test_a_legacy_file_whose_sys_info_says_nothing_of_byte_order_is_little_endian(tmp_path):
    """torch.load ignores sys_info, so such a file loads there (as little-endian, as torch writes): refusing it here
    would refuse a file torch reads; one that says big-endian is refused, not read as garbage."""
    m = module()
    path = tmp_path / "m.pkl"
    path.write_bytes(legacy_bytes(m, little_endian=None))
    read = dict(named_tensors(read_dalle_file(path)))
    assert torch.equal(read["own"], m.own)
    path.write_bytes(legacy_bytes(m, little_endian=False))
    with pytest.raises(NotADalleFile, match=rf"^{path}: legacy torch format 1001 / .* not understood$"):
        read_dalle_file(path)


def test_a_legacy_storage_a_byte_short_is_refused_as_cut_short_naming_the_file(tmp_path):
    """Its last storage's last byte gone: read as it stood, a tensor of wrong values or a torch error; it is a file
    cut short, said so."""
    m = torch.nn.Identity()
    m.register_buffer("own", torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
    whole = legacy_bytes(m)
    path = tmp_path / "m.pkl"
    path.write_bytes(whole[:-1])
    with pytest.raises(NotADalleFile) as refused:
        read_dalle_file(path)
    assert str(refused.value).startswith(f"{path}: cut short (storage ")
    assert str(refused.value).endswith("); download it again, or copy it again from where it came")
    assert ": 15 of its 16 bytes there)" in str(refused.value)  # its one storage: 4 float32
