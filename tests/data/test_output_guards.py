"""`prepare` writes only into a new folder or over its own earlier output, refused before any work otherwise; the
advice on a changed prepare output, once followed, gives a folder readers take (it used to send the user round)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from megadalle.cli import main
from megadalle.data.index import INDEX_NAME, ShardIndex
from megadalle.data.shards import ShardWriter, open_index
from tests.data.conftest import jpeg_bytes
from tests.data.prepare_inputs import put


def snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def pictures(tmp_path):
    """Four 32 px JPEGs with captions."""
    root = tmp_path / "pics"
    for i in range(4):
        put(root, f"p{i}.jpg", jpeg_bytes((32, 32), i), f"picture {i}")
    return root


def prepare_argv(pictures, output):
    return ["prepare", f"input={pictures}", f"output={output}", "image_size=16", "min_side=16", "num_workers=0"]


def refused(capsys, argv, *parts):
    """Run `argv`, expect the one-line refusal (exit 2) holding every part; the message."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for part in parts:
        assert part in err, err
    return err


def token_output(root, meta=True, records=True):
    """What `encode` leaves: token shards, `<shard>.encoded.json` records and (finished) index.json with its grid."""
    with ShardWriter(root, meta={"grid_size": 4, "vocab_size": 8} if meta else {}) as writer:
        for i in range(3):
            writer.write({"__key__": f"{i:06d}", "codes.npy": np.full((4, 4), i, np.uint16), "txt": f"caption {i}"})
    if records:
        (root / "shard-000000.tar.encoded.json").write_text('{"dvae": "abc"}')
    if not meta:
        (root / INDEX_NAME).unlink()  # a crashed encode
    return root


@pytest.mark.parametrize("meta, records, evidence", [
    (True, True, "(index.json with grid_size=4, vocab_size=8; 1 <shard>.encoded.json record)"),
    (False, True, "(1 <shard>.encoded.json record)"),
    (True, False, "(index.json with grid_size=4, vocab_size=8)")])
def test_prepare_refuses_an_encode_output_before_any_work(pictures, tmp_path, capsys, meta, records, evidence):
    """prepare into a copy of encode's output replaced the token shards with image shards and kept encode's record
    beside them, which a later encode trusted: index.json then called image shards token shards."""
    tokens = token_output(tmp_path / "tokens", meta, records)
    before = snapshot(tokens)
    refused(capsys, prepare_argv(pictures, tokens),
            f"megadalle prepare: output={tokens} holds token shards written by `megadalle encode` {evidence}, which "
            "prepare would replace with image shards; give another output=, or remove them from it first")
    assert snapshot(tokens) == before


def test_prepare_refuses_an_output_holding_tars_it_did_not_write_and_takes_it_once_they_are_moved(pictures, tmp_path,
                                                                                                 capsys):
    """A user's mine.tar beside prepare's shards made a folder no reader takes, and the readers' advice, to rerun
    prepare into it, gave the same folder again."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.tar").write_bytes(b"the user's own")
    (out / "notes.txt").write_text("kept")
    refused(capsys, prepare_argv(pictures, out),
            f"megadalle prepare: output={out} holds 1 tar that prepare did not write (mine.tar): prepare writes only "
            "into a new folder or over its own earlier output; give another output=, or move it out of it")
    assert sorted(p.name for p in out.iterdir()) == ["mine.tar", "notes.txt"]
    (out / "mine.tar").rename(tmp_path / "mine.tar")
    assert main(prepare_argv(pictures, out)) == 0
    assert main(prepare_argv(pictures, out)) == 0  # its own earlier output it rewrites
    assert open_index(out).total == 4 and (out / "notes.txt").read_text() == "kept"


def test_prepare_refuses_a_folder_of_tars_indexed_by_the_index_verb(pictures, tmp_path, capsys):
    """Tars written elsewhere, even named like prepare's shards, are the user's data set: never written over."""
    import webdataset as wds

    out = tmp_path / "wds"
    out.mkdir()
    with wds.TarWriter(str(out / "shard-000000.tar")) as sink:
        sink.write({"__key__": "a", "jpg": jpeg_bytes((16, 16)), "txt": "a cat"})
    assert main(["index", str(out), "num_workers=0"]) == 0
    capsys.readouterr()
    before = snapshot(out)
    refused(capsys, prepare_argv(pictures, out),
            f"output={out} holds 1 tar that prepare did not write (shard-000000.tar, indexed by `megadalle index` as "
            "tars written elsewhere)")
    assert snapshot(out) == before


def test_the_advice_on_a_prepare_output_with_a_tar_dropped_in_is_to_move_it_out(pictures, tmp_path):
    from megadalle.data.coverage import OutputChanged

    out = tmp_path / "out"
    assert main(prepare_argv(pictures, out)) == 0
    (out / "mine.tar").write_bytes(b"the user's own")
    with pytest.raises(OutputChanged) as changed:
        open_index(out)
    assert str(changed.value) == (f"{out}: its tars are not those its index.json lists (new: mine.tar); move mine.tar "
                                  "out of it (prepare did not write it): the shards it lists are there as prepare "
                                  "wrote them")
    (out / "mine.tar").rename(tmp_path / "mine.tar")
    assert open_index(out).total == 4


def test_the_advice_on_a_prepare_output_also_missing_a_shard_is_followed_to_a_whole_output(pictures, tmp_path,
                                                                                           capsys):
    """Moving the stray tar out, then rerunning the prepare the advice names, gives a folder readers take."""
    from megadalle.data.coverage import OutputChanged

    out = tmp_path / "out"
    assert main([*prepare_argv(pictures, out), "shard_max_samples=2"]) == 0
    (out / "shard-000001.tar").unlink()
    shutil.copy(out / "shard-000000.tar", out / "mine.tar")
    with pytest.raises(OutputChanged) as changed:
        open_index(out)
    rebuild = f"megadalle prepare input={pictures} output={out} image_size=16 min_side=16 shard_max_samples=2"
    assert str(changed.value).endswith(f"; a megadalle output is written whole: move mine.tar out of it (prepare did "
                                       f"not write it), then rebuild it with `{rebuild}` (not `megadalle index`, "
                                       "which would drop its meta)")
    (out / "mine.tar").rename(tmp_path / "mine.tar")
    assert main(rebuild.split()[1:]) == 0
    assert open_index(out).total == 4 and ShardIndex.load(out).meta["format"] == "jpg"


def test_prepare_called_directly_refuses_too(pictures, tmp_path):
    """The demo calls `prepare()` itself, past the CLI's preflight: the guard is in the function."""
    from megadalle.config.data import PrepareConfig
    from megadalle.data.prepare import prepare
    from megadalle.errors import UserError

    output = tmp_path / "out"
    output.mkdir()
    (output / "mine.tar").write_bytes(b"not ours")
    with pytest.raises(UserError, match="holds 1 tar that prepare did not write"):
        prepare(PrepareConfig(input=str(pictures), output=str(output), image_size=16, min_side=16, num_workers=0),
                progress=False)
    assert sorted(p.name for p in output.iterdir()) == ["mine.tar"]
