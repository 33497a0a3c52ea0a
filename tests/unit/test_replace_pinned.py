"""What an export's `output` may replace, as a user meets it: the words of each refusal, and what stays untouched.
The paths are built here by hand (plain files and folders, weights written by megadalle's writers)."""
import pytest

from megadalle.weights import OutputInTheWay, check_replaceable, save_weights
from tests.unit.test_replace_weights import STATE, contents, write, write_folder


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


def test_the_folder_export_advised_names_only_the_pieces_the_folder_still_holds(tmp_path):
    """A model folder whose bundle.json names a CLIP the user has since removed: the export advised to rewrite it
    takes the folder's tokenizer and dVAE, and no clip_weights= naming a file that is not there."""
    folder = tmp_path / "model"
    write_folder(folder / "transformer", "transformer")
    save_weights(folder / "dvae.safetensors", STATE, "dvae", {"width": 3})
    (folder / "tokenizer.model").write_text("pieces")
    (folder / "bundle.json").write_text('{"transformer": "transformer", "tokenizer": "tokenizer.model", '
                                        '"dvae": "dvae.safetensors", "clip": "clip.safetensors"}')
    with pytest.raises(OutputInTheWay) as refused:
        check_replaceable(folder / "dvae.safetensors", kind="transformer")
    advised = str(refused.value)
    assert f"`megadalle export run=RUN output={folder} " in advised
    assert f" tokenizer={folder / 'tokenizer.model'}" in advised and f" dvae_weights={folder / 'dvae.safetensors'}" \
        in advised
    assert "clip" not in advised.partition("`megadalle export")[2]


def test_an_empty_folder_is_taken_by_an_export_of_any_kind(tmp_path):
    """An empty folder (made by the user for the export) is no one's files: every export may write there."""
    folder = tmp_path / "empty"
    folder.mkdir()
    for kind in (None, "transformer", "dvae", "clip"):
        check_replaceable(folder, kind=kind)
    write_folder(folder, "dvae")
    assert "model.safetensors.index.json" in contents(folder)


def test_a_model_folder_is_not_exported_inside_another(tmp_path):
    """`export output=model/sub`: a folder export, but inside a model folder, whose own export alone writes there."""
    from megadalle.bundle_write import check_output

    folder = tmp_path / "model"
    write_folder(folder / "transformer", "transformer")
    (folder / "bundle.json").write_text('{"transformer": "transformer"}')
    for target in (folder / "sub", folder / "transformer"):
        with pytest.raises(OutputInTheWay, match=f"^output={target}: inside the model folder {folder}, "):
            check_output(target, "transformer")
    assert not (folder / "sub").exists()
    check_output(folder, "transformer")  # the folder's own export


def test_the_transformer_written_alone_is_kept_out_of_the_folder_that_names_it(tmp_path):
    """`export weights_only=true output=model/transformer`: the very Transformer the folder's bundle.json names, but
    written without the folder's tokenizer and dVAE checks."""
    folder = tmp_path / "model"
    write_folder(folder / "transformer", "transformer")
    (folder / "bundle.json").write_text('{"transformer": "transformer"}')
    before = contents(folder / "transformer")
    with pytest.raises(OutputInTheWay, match=f"^output={folder / 'transformer'}: inside the model folder {folder}, "
                                             "whose tokenizer, dVAE and bundle.json a Transformer exported alone"):
        check_replaceable(folder / "transformer", kind="transformer", alone=True)
    assert contents(folder / "transformer") == before
