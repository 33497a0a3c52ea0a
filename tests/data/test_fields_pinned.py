"""Shard fields by name, against hand-written bytes: which member is which sample's which field, what each field
decodes to, the bytes each value is written as, and what is refused."""
from __future__ import annotations

import numpy as np
import pytest

from megadalle.data.fields import UnsafeFieldError, decode_field, encode_field, split_member


@pytest.mark.parametrize("name, key_field", [
    ("IMG_1.JPG", ("IMG_1", "jpg")),  # a camera's names: the field every reader asks for, the key as it was
    ("dir/Photo.Codes.NPY", ("dir/Photo", "codes.npy")),
    ("dir/._IMG_1.jpg", ("dir/._IMG_1.jpg", "")),  # macOS AppleDouble: no key, no field
    (".DS_Store", (".DS_Store", "")),
    ("v1.2/abc.txt", ("v1.2/abc", "txt")),  # a dot in a folder's name is no field
])
def test_a_member_name_splits_into_key_and_field(name, key_field):
    assert split_member(name) == key_field


@pytest.mark.parametrize("field, data, value", [
    ("meta.JSON", b'{"a": 1}', {"a": 1}),
    ("caption", "un caf\u00e9".encode(), "un caf\u00e9"),
    ("text", b"words", "words"),
    ("id", b"42", 42),
    ("cls2", b"7", 7),
])
def test_each_field_decodes_by_its_extension_in_any_case(field, data, value):
    assert decode_field(field, data) == value


@pytest.mark.parametrize("field, value, data", [
    ("json", {"b": "caf\u00e9", "a": 1}, '{"a": 1, "b": "caf\u00e9"}'.encode()),  # keys sorted, text as UTF-8
    ("id", 7, b"7"),
    ("index", 12, b"12"),
    ("txt", memoryview(b"ab"), b"ab"),
    ("txt", "caf\u00e9", b"caf\xc3\xa9"),
])
def test_each_value_is_written_as_these_bytes(field, value, data):
    assert encode_field(field, value) == data


def test_an_array_goes_only_into_an_npy_field():
    with pytest.raises(ValueError, match="field 'codes': an array must go into a field ending in .npy"):
        encode_field("codes", np.zeros(2, np.uint16))


@pytest.mark.parametrize("field", ["pkl", "x.pth", "pt", "msgpack"])
def test_no_pickled_field_is_written_even_from_bytes(field):
    with pytest.raises(UnsafeFieldError, match=f"field '{field}': megadalle writes no pickled fields"):
        encode_field(field, b"\x80\x04N.")


@pytest.mark.parametrize("field", ["x.pth", "pt", "mp", "msgpack"])
def test_torch_and_msgpack_fields_are_never_decoded(field):
    with pytest.raises(UnsafeFieldError, match="would need unpickling"):
        decode_field(field, b"\x80\x04N.")


@pytest.mark.parametrize("field", ["jfif", "jpe"])
def test_jpeg_under_its_other_extensions_decodes_as_an_image(field):
    from tests.data.conftest import jpeg_bytes

    image = decode_field(field, jpeg_bytes((24, 16), 3))
    assert (image.mode, image.size) == ("RGB", (24, 16))
