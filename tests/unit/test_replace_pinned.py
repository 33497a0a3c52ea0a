"""What an export's `output` may replace, as a user meets it: the words of each refusal, and what stays untouched.
The paths are built here by hand (plain files and folders, weights written by megadalle's writers)."""
import pytest

from megadalle.weights import OutputInTheWay, check_replaceable
from tests.unit.test_replace_weights import contents, write


def test_a_folder_named_like_one_file_is_refused_as_a_folder(tmp_path):
    """`output=w.safetensors` where w.safetensors is a folder (of the user's, or an earlier folder export)."""
    folder = tmp_path / "w.safetensors"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    for kind in (None, "transformer"):
        with pytest.raises(OutputInTheWay, match=f"^output={folder}: a folder, where the export writes one "
                                                 r"\.safetensors file; give another path, or remove it$"):
            check_replaceable(folder, kind=kind)
    assert contents(folder) == {"notes.txt": b"mine"}


def test_a_json_beside_naming_the_kind_but_holding_no_config_is_left_as_it_is(tmp_path):
    """A user's `foo.json` that says `"kind": "transformer"` is still no export's config JSON without its `config`."""
    path, mine = tmp_path / "foo.safetensors", tmp_path / "foo.json"
    mine.write_text('{"kind": "transformer"}')
    with pytest.raises(OutputInTheWay, match=f"{mine} is there and is not the config JSON of a 'transformer' model"):
        write(path, "transformer")
    assert contents(tmp_path) == {"foo.json": b'{"kind": "transformer"}'}


def test_a_plain_file_where_a_folder_export_goes_is_refused_by_name(tmp_path):
    """`output=model` naming a user's file: refused in words, for a weights folder and for a model folder alike."""
    mine = tmp_path / "model"
    mine.write_text("mine")
    for earlier in (None, lambda folder: False):
        with pytest.raises(OutputInTheWay, match=f"^output={mine}: exists and is no folder, so the export will not "
                                                 "replace it; give another path, or remove it$"):
            check_replaceable(mine, earlier, "a model folder", kind="transformer")
    assert mine.read_text() == "mine"
