"""`megadalle encode`: token shards DATA's token loader reads, restartable per shard, codes = the encoder's argmax."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from megadalle.cli import main
from megadalle.data.index import ShardIndex
from megadalle.data.loader import token_loader
from megadalle.data.shards import iter_samples
from megadalle.encode import encode_shards
from megadalle.models.dvae import DVAE, load_dvae
from megadalle.weights import save_weights
from tests.data.mixed_image_tar import mixed_image_tar
from tests.dvae.file_bytes import file_bytes


class WordIds:
    """A stand-in tokenizer (the loader only calls `encode_cut`): one id per word, padded with 0."""

    def encode_cut(self, text, text_len, dropout=0.0, seed=None):
        ids = [1 + len(word) for word in text.split()]
        return ids[:text_len] + [0] * (text_len - len(ids[:text_len])), len(ids) > text_len


@pytest.fixture(scope="module")
def weights(tmp_path_factory, small_dvae_config):
    path = tmp_path_factory.mktemp("dvae") / "dvae.safetensors"
    model = DVAE(small_dvae_config)
    save_weights(path, model.state_dict(), kind="dvae", config=small_dvae_config)
    return path


def test_encode_writes_token_shards_the_token_loader_reads(tmp_path, image_shards, weights):
    model = load_dvae(weights)
    index = encode_shards(model, image_shards, tmp_path / "tokens", batch_size=7)
    source = ShardIndex.load(image_shards)
    assert [s.name for s in index.shards] == [s.name for s in source.shards]
    assert index.total == 40 and index.meta["grid_size"] == 8
    sample = next(iter_samples(tmp_path / "tokens", ["codes.npy", "txt", "json"]))
    assert sample["codes.npy"].dtype == np.uint16 and sample["codes.npy"].shape == (8, 8)
    assert sample["txt"] == "picture number 0\nsecond line" and sample["json"] == {"i": 0}
    image = next(iter_samples(image_shards, ["png"]))["png"]
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    assert torch.equal(model.encode(pixels)[0], torch.from_numpy(sample["codes.npy"].astype(np.int64)))

    loader = token_loader(tmp_path / "tokens", global_batch=8, tokenizer=WordIds(), text_len=6, shuffle=False)
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 64) and batch["image"].dtype == torch.long
    assert batch["text"].shape == (8, 6)
    assert int(batch["image"].max()) < 64

    decoded = load_dvae(weights).decode_codes(batch["image"].view(8, 8, 8))
    assert decoded.shape == (8, 3, 32, 32)


def test_encode_restarts_where_it_stopped(tmp_path, image_shards, weights, monkeypatch):
    out = tmp_path / "tokens"
    model = load_dvae(weights)
    encode_shards(model, image_shards, out)
    before = {p.name: p.read_bytes() for p in out.glob("shard-*.tar")}
    (out / "shard-000001.tar").unlink()  # as if the run died while writing shard 1
    (out / "index.json").unlink()
    seen = []
    original = model.encode
    monkeypatch.setattr(model, "encode", lambda images: seen.append(len(images)) or original(images))
    index = encode_shards(model, image_shards, out)
    assert sum(seen) == 16  # only shard 1 was encoded again
    assert {p.name: p.read_bytes() for p in out.glob("shard-*.tar")} == before
    assert index.total == 40 and not list(out.glob(".encode-*"))
    seen.clear()
    encode_shards(model, image_shards, out)
    assert seen == []


def test_encode_verb_runs_and_rejects_bad_values(tmp_path, image_shards, weights, capsys):
    args = [f"dvae_weights={weights}", f"input={image_shards}", f"output={tmp_path / 'tok'}", "device=cpu"]
    assert main(["encode", *args]) == 0
    assert json.loads((tmp_path / "tok" / "index.json").read_text())["total"] == 40
    assert main(["encode", *args, "batch_size=0"]) == 2
    assert "batch_size=0" in capsys.readouterr().err
    assert main(["encode", *args[1:], "dvae_weights=model.pt"]) == 2
    assert "dvae_weights=model.pt: no such file" in capsys.readouterr().err


def test_two_processes_split_the_shards_and_the_last_one_writes_the_index(tmp_path, image_shards, weights):
    model = load_dvae(weights)
    assert encode_shards(model, image_shards, tmp_path, rank=0, world_size=2) is None  # shards 0 and 2
    assert sorted(p.name for p in tmp_path.glob("shard-*.tar")) == ["shard-000000.tar", "shard-000002.tar"]
    index = encode_shards(model, image_shards, tmp_path, rank=1, world_size=2)
    assert index.total == 40 and (tmp_path / "index.json").is_file()


def test_a_rank_done_before_the_others_says_the_index_is_still_to_come(tmp_path, image_shards, weights, capsys,
                                                                      monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["encode", f"dvae_weights={weights}", f"input={image_shards}", f"output={tmp_path / 'out'}"]) == 0
    assert "rank 0 of 2: its shards of" in capsys.readouterr().err and not (tmp_path / "out" / "index.json").exists()


def _shard_bytes(root):
    return {p.name: p.read_bytes() for p in sorted(root.glob("shard-*.tar"))}


def test_a_rerun_with_another_dvae_reencodes_every_shard(tmp_path, image_shards, small_dvae_config, capsys):
    """Shards are skipped only when the same weights and input made them: a dVAE with another grid must
    not leave the old codes under an index.json that names the new grid."""
    from dataclasses import replace

    other = DVAE(replace(small_dvae_config, n_groups=2))  # 16x16 codes where the first dVAE wrote 8x8
    first = DVAE(small_dvae_config)
    encode_shards(first, image_shards, tmp_path / "tokens")
    index = encode_shards(other, image_shards, tmp_path / "tokens")
    fresh = encode_shards(other, image_shards, tmp_path / "fresh")
    assert index.meta["grid_size"] == 16
    assert _shard_bytes(tmp_path / "tokens") == _shard_bytes(tmp_path / "fresh")
    assert "re-encoding 3 shards" in capsys.readouterr().err
    assert index.meta == {**fresh.meta, "source": index.meta["source"]}


def test_a_rerun_with_other_weights_of_the_same_shape_reencodes(tmp_path, image_shards, small_dvae_config):
    torch.manual_seed(0)
    first = DVAE(small_dvae_config)
    torch.manual_seed(1)
    second = DVAE(small_dvae_config)
    encode_shards(first, image_shards, tmp_path / "tokens")
    encode_shards(second, image_shards, tmp_path / "tokens")
    encode_shards(second, image_shards, tmp_path / "fresh")
    assert _shard_bytes(tmp_path / "tokens") == _shard_bytes(tmp_path / "fresh")


def test_a_rerun_on_another_input_reencodes(tmp_path, image_shards, weights):
    from tests.dvae.conftest import write_image_shards

    other = tmp_path / "other"
    write_image_shards(other, 40, 32, 16, seed=5)  # same shard names and counts, other images
    model = load_dvae(weights)
    encode_shards(model, image_shards, tmp_path / "tokens")
    encode_shards(model, other, tmp_path / "tokens")
    encode_shards(model, other, tmp_path / "fresh")
    assert _shard_bytes(tmp_path / "tokens") == _shard_bytes(tmp_path / "fresh")


def test_encode_reads_each_samples_own_image_field(tmp_path, weights):
    """A folder from elsewhere mixing jpg, png and webp samples is encoded whole, each sample from its image."""
    root = mixed_image_tar(tmp_path / "wds", size=32)
    index = encode_shards(load_dvae(weights), root, tmp_path / "tokens")
    assert index.total == 6
    assert [s["__key__"] for s in iter_samples(tmp_path / "tokens", ["txt"])] == [f"sub/dir/k{i}" for i in range(6)]


def test_a_rerun_on_a_smaller_input_removes_the_shards_it_no_longer_has(tmp_path, image_shards, weights, capsys):
    """Encoding a re-prepared input with fewer shards into the same folder leaves exactly the new set: the
    earlier encode's third shard (and its offsets and record) goes, a file encode did not write stays."""
    from tests.dvae.conftest import write_image_shards

    smaller = tmp_path / "smaller"
    write_image_shards(smaller, 20, 32, 16)  # 2 shards where image_shards has 3
    model = load_dvae(weights)
    out = tmp_path / "tokens"
    encode_shards(model, image_shards, out)
    (out / "notes.txt").write_text("mine")
    index = encode_shards(model, smaller, out)
    fresh = encode_shards(model, smaller, tmp_path / "fresh")
    assert [s.name for s in index.shards] == ["shard-000000.tar", "shard-000001.tar"]
    fresh_names = [p.name for p in (tmp_path / "fresh").iterdir()]
    assert sorted(p.name for p in out.iterdir()) == sorted([*fresh_names, "notes.txt"])
    assert _shard_bytes(out) == _shard_bytes(tmp_path / "fresh") and index.total == fresh.total == 20
    assert "removed 1 shards of an earlier encode" in capsys.readouterr().err


@pytest.mark.parametrize("spelling", ["{input}/val", "{input}/./", "{input}/sub/tokens", "{parent}"])
def test_an_output_in_the_input_or_holding_it_is_refused_before_anything_is_written(tmp_path, weights, spelling,
                                                                                    capsys):
    """`output=p1/val` used to write the training split's codes over the input's validation split, then crash
    reading that split back as images: the output must be neither the input, inside it, nor around it."""
    from tests.dvae.conftest import write_image_shards

    root = tmp_path / "p1"
    write_image_shards(root, 8, 32, 8)
    write_image_shards(root / "val", 4, 32, 4, seed=1)
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    output = spelling.format(input=root, parent=tmp_path)
    assert main(["encode", f"dvae_weights={weights}", f"input={root}", f"output={output}", "device=cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"megadalle encode: output='{output}'") and len(err.splitlines()) == 1
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before


@pytest.mark.parametrize("under", ["", "/tokens"])
def test_an_output_where_a_file_stands_is_refused_before_any_image_is_encoded(tmp_path, image_shards, weights, under,
                                                                             capsys):
    (tmp_path / "notes.txt").write_text("mine")
    output = f"{tmp_path / 'notes.txt'}{under}"
    assert main(["encode", f"dvae_weights={weights}", f"input={image_shards}", f"output={output}", "device=cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"megadalle encode: output={output}: ") and len(err.splitlines()) == 1
    assert ("a file; give a folder" if not under else f"{tmp_path / 'notes.txt'} is a file, not a folder") in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_encode_counts_the_images_it_upscales_from_tars_written_elsewhere(tmp_path, weights, capsys):
    """A 16 px thumbnail in a tar from elsewhere is enlarged to the dVAE's 32 px without an error: encode says how
    many it upscaled, and the `megadalle index min_side=` that skips them; then it encodes the rest only."""
    import webdataset as wds

    from .conftest import png, rectangles

    (tmp_path / "tars").mkdir()
    with wds.TarWriter(str(tmp_path / "tars" / "00000.tar")) as sink:
        for i, image in enumerate([*rectangles(3, 32), *rectangles(1, 16, seed=1)]):
            sink.write({"__key__": f"k{i}", "png": png(image), "txt": f"picture {i}"})
    argv = ["encode", f"dvae_weights={weights}", f"input={tmp_path / 'tars'}", f"output={tmp_path / 'tok'}",
            "device=cpu"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert (f"[encode] {tmp_path / 'tars'}: 1 of the 4 images encoded now were smaller than the dVAE's input (32 px) "
            f"and upscaled to it, a blurry target; `megadalle index dir={tmp_path / 'tars'} min_side=32` skips "
            "them") in err
    assert main(["index", str(tmp_path / "tars"), "num_workers=0", "min_side=32"]) == 0
    assert main(argv) == 0
    assert "upscaled" not in capsys.readouterr().err and ShardIndex.load(tmp_path / "tok").total == 3


@pytest.mark.parametrize("impostor", ["image shard", "same-shape codes"])
def test_a_record_beside_a_tar_it_does_not_describe_is_not_trusted(tmp_path, image_shards, small_dvae_config,
                                                                   impostor, capsys):
    """prepare once wrote its image shard over encode's and kept encode's record: encode skipped the shard on the
    record alone and published an index.json calling an image shard token shards (train: no field codes.npy).
    Codes of other weights of the same shape have the very size: the record's checksum tells them apart."""
    import shutil

    torch.manual_seed(0)
    model = DVAE(small_dvae_config)
    out = tmp_path / "tokens"
    encode_shards(model, image_shards, out)
    before = _shard_bytes(out)
    source = image_shards
    if impostor == "same-shape codes":
        torch.manual_seed(1)
        encode_shards(DVAE(small_dvae_config), image_shards, tmp_path / "other")
        source = tmp_path / "other"
        assert (source / "shard-000001.tar").stat().st_size == (out / "shard-000001.tar").stat().st_size
    for name in ("shard-000001.tar", "shard-000001.tar.idx"):
        shutil.copy(source / name, out / name)
    capsys.readouterr()
    index = encode_shards(model, image_shards, out)
    assert _shard_bytes(out) == before and index.total == 40
    assert "re-encoding 1 shards (shard-000001.tar)" in capsys.readouterr().err


@pytest.mark.parametrize("beside", ["its codes", "an image shard"])
def test_a_record_from_before_records_named_their_tar_is_trusted_beside_codes_only(tmp_path, image_shards,
                                                                                    small_dvae_config, beside,
                                                                                    capsys):
    """Token folders encoded before records held their tar's checksum are not encoded again whole on the first
    rerun (hours for a large data set), but such a record beside an image shard is not trusted."""
    import json
    import shutil

    torch.manual_seed(0)
    model = DVAE(small_dvae_config)
    out = tmp_path / "tokens"
    encode_shards(model, image_shards, out)
    before = _shard_bytes(out)
    for record in out.glob("*.encoded.json"):
        written = json.loads(record.read_text())
        del written["output"]
        record.write_text(json.dumps(written))
    if beside == "an image shard":
        for name in ("shard-000001.tar", "shard-000001.tar.idx"):
            shutil.copy(image_shards / name, out / name)
    capsys.readouterr()
    encode_shards(model, image_shards, out)
    err = capsys.readouterr().err
    assert _shard_bytes(out) == before
    assert ("re-encoding 1 shards (shard-000001.tar)" in err) == (beside == "an image shard"), err


def test_tars_of_codes_without_their_records_are_encodes_own(tmp_path, image_shards, small_dvae_config):
    """What a crashed encode of an older version leaves (it removed a shard's record, then its index.json, before
    encoding the shard again), and what another rank of a split encode finds: tars of codes, no records, no index.
    The rerun that finishes the folder was refused, as if someone else had written them."""
    torch.manual_seed(0)
    model = DVAE(small_dvae_config)
    out = tmp_path / "tokens"
    encode_shards(model, image_shards, out)
    before = _shard_bytes(out)
    for path in [*out.glob("*.encoded.json"), out / "index.json"]:
        path.unlink()
    assert encode_shards(model, image_shards, out).total == 40
    assert _shard_bytes(out) == before


def test_a_crash_between_a_shards_record_and_its_tar_leaves_a_rerun_that_encodes_it_again(tmp_path, image_shards,
                                                                                          small_dvae_config,
                                                                                          monkeypatch):
    """The record goes first, so every tar encode wrote has one (a rerun refuses a tar without, as not its own),
    and a record whose tar did not follow describes no tar there."""
    import megadalle.encode as encode

    torch.manual_seed(0)
    first = DVAE(small_dvae_config)
    torch.manual_seed(1)
    second = DVAE(small_dvae_config)
    out = tmp_path / "tokens"
    encode_shards(first, image_shards, out)
    real_replace = os.replace

    def crash_at_the_tar(src, dst):
        if str(dst).endswith(".tar"):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(encode.os, "replace", crash_at_the_tar)
    with pytest.raises(KeyboardInterrupt):
        encode_shards(second, image_shards, out)
    monkeypatch.setattr(encode.os, "replace", real_replace)
    encode_shards(second, image_shards, out)
    encode_shards(second, image_shards, tmp_path / "fresh")
    assert _shard_bytes(out) == _shard_bytes(tmp_path / "fresh")


def _prepared_pictures(tmp_path):
    """A real `prepare` output: four 32 px PNGs."""
    from .conftest import png, rectangles

    pics = tmp_path / "pics"
    pics.mkdir()
    for i, image in enumerate(rectangles(4, 32)):
        (pics / f"p{i}.png").write_bytes(png(image))
        (pics / f"p{i}.txt").write_text(f"picture {i}")
    out = tmp_path / "prepared"
    assert main(["prepare", f"input={pics}", f"output={out}", "image_size=32", "min_side=32", "num_workers=0"]) == 0
    return out


def test_encode_refuses_an_output_holding_prepared_image_shards(tmp_path, image_shards, weights, capsys):
    """`encode output=` another data set's prepared folder replaced its images with codes, with only a note."""
    prepared = _prepared_pictures(tmp_path)
    before = file_bytes(prepared)
    capsys.readouterr()
    argv = ["encode", f"dvae_weights={weights}", f"input={image_shards}", f"output={prepared}", "device=cpu"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"megadalle encode: output={prepared} holds image shards written by `megadalle prepare` (index.json with "
        "format=jpg, image_size=32), which encode would replace with token shards; give another output=, or remove "
        "them from it first\n")
    from megadalle.data.output_guard import OutputTaken

    with pytest.raises(OutputTaken):
        encode_shards(load_dvae(weights), image_shards, prepared)
    assert file_bytes(prepared) == before


def test_encode_refuses_an_output_holding_tars_it_did_not_write_even_in_its_validation_split(tmp_path, weights,
                                                                                           capsys):
    """Its own earlier output (each tar with its record) it reruns into; a tar from elsewhere, say in `val/`, which
    encode writes from the input's split, is refused before any image is encoded."""
    from tests.dvae.conftest import write_image_shards

    source = tmp_path / "p1"
    write_image_shards(source, 8, 32, 8)
    write_image_shards(source / "val", 4, 32, 4, seed=1)
    out = tmp_path / "tokens"
    argv = ["encode", f"dvae_weights={weights}", f"input={source}", f"output={out}", "device=cpu"]
    assert main(argv) == 0 and main(argv) == 0
    (out / "val" / "00000.tar").write_bytes(b"from elsewhere")
    before = file_bytes(out)
    capsys.readouterr()
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"megadalle encode: output={out / 'val'} holds 1 tar that encode did not write (00000.tar): encode writes "
        "only into a new folder or over its own earlier output; give another output=, or move it out of it\n")
    assert file_bytes(out) == before


def _split_input(root, val=True, seed=0):
    """An image-shard folder of 8 samples, with a validation split of 4 in `val/` when `val`."""
    from tests.dvae.conftest import write_image_shards

    write_image_shards(root, 8, 32, 8, seed=seed)
    if val:
        write_image_shards(root / "val", 4, 32, 4, seed=seed + 1)
    return root


def test_an_encode_stopped_in_its_split_leaves_an_output_that_is_not_finished(tmp_path, weights, monkeypatch):
    """The output's index.json came first, then the split: an encode killed in the split left an output that looked
    finished, and train ran without validation (advising a data.val_shards it then refused). The output's comes last,
    as prepare's does."""
    import megadalle.encode as encode

    split, out = _split_input(tmp_path / "split"), tmp_path / "tokens"
    argv = ["encode", f"dvae_weights={weights}", f"input={split}", f"output={out}", "device=cpu"]
    assert main(argv) == 0 and (out / "index.json").is_file() and (out / "val" / "index.json").is_file()
    encode_shard = encode.encode_shard

    def killed_in_the_split(model, path, target, *args):
        if target.parent.name == "val":
            raise KeyboardInterrupt
        return encode_shard(model, path, target, *args)

    (out / "val" / "shard-000000.tar.encoded.json").unlink()  # so that its shard is encoded again
    monkeypatch.setattr(encode, "encode_shard", killed_in_the_split)
    with pytest.raises(KeyboardInterrupt):
        encode.run(compose_encode(argv))
    assert not (out / "index.json").exists() and not (out / "val" / "index.json").exists()
    monkeypatch.undo()
    assert main(argv) == 0 and ShardIndex.load(out).total == 8 and ShardIndex.load(out / "val").total == 4


def compose_encode(argv):
    from megadalle.config.compose import compose

    return compose("encode", argv[1:])


def test_a_split_the_input_no_longer_has_is_removed_and_train_sees_none(tmp_path, weights, capsys):
    """The input prepared again with val_fraction=0: the earlier encode's `val/` stayed, and train validated on
    samples that were now training samples, without a word."""
    from megadalle.config.data import DataConfig

    split, whole = _split_input(tmp_path / "split"), _split_input(tmp_path / "whole", val=False, seed=3)
    out = tmp_path / "tokens"
    argv = ["encode", f"dvae_weights={weights}", f"output={out}", "device=cpu"]
    assert main([*argv, f"input={split}"]) == 0 and (out / "val" / "index.json").is_file()
    (out / "val" / ".encode-shard-000000.tar").mkdir()  # a crash's staging: encode's too
    capsys.readouterr()
    assert main([*argv, f"input={whole}"]) == 0
    assert f"[encode] {out / 'val'}: removed the validation split an earlier encode carried over from its input's " \
           "val/: this input has none, and train would have validated on it" in capsys.readouterr().err
    assert not (out / "val").exists() and ShardIndex.load(out).total == 8
    assert DataConfig(shards=str(out)).validation_shards() is None


def _stale_split_with_a_note(tmp_path, weights):
    """(encode's argv but the input, the split input, the input without a split, the output, its files): an output
    encoded from the split input, a note of the user's then put into the split encode carried over."""
    split, whole = _split_input(tmp_path / "split"), _split_input(tmp_path / "whole", val=False, seed=3)
    out = tmp_path / "tokens"
    argv = ["encode", f"dvae_weights={weights}", f"output={out}", "device=cpu"]
    assert main([*argv, f"input={split}"]) == 0
    (out / "val" / "notes.txt").write_text("mine")
    return argv, split, whole, out, file_bytes(out)


def test_a_split_of_encodes_holding_other_files_is_refused_and_one_encode_did_not_write_as_a_split_stays(
        tmp_path, weights, capsys):
    """Encode deletes no file of the user's: its old split with a note in it is refused by name, before any image is
    encoded; a `val/` encoded on purpose from another set (its source is no split) is the user's validation set."""
    argv, split, whole, out, before = _stale_split_with_a_note(tmp_path, weights)
    capsys.readouterr()
    assert main([*argv, f"input={whole}"]) == 2
    assert capsys.readouterr().err == (
        f"megadalle encode: output={out / 'val'} holds the validation split an earlier encode carried over from its "
        "input's val/, which this input does not have (train would validate on it: data.val_shards=null reads "
        "<shards>/val), and 1 entry encode did not write (notes.txt), so encode does not remove it; move it out of "
        "it, or give another output=\n")
    assert file_bytes(out) == before

    chosen = tmp_path / "chosen"
    assert main(["encode", f"dvae_weights={weights}", f"input={whole}", f"output={chosen / 'val'}", "device=cpu"]) == 0
    assert main([*argv[:2], f"output={chosen}", "device=cpu", f"input={whole}"]) == 0
    assert ShardIndex.load(chosen / "val").total == 8


def test_a_val_encoded_on_purpose_from_a_folder_named_val_stays(tmp_path, weights):
    """`encode input=other/val output=tokens/val` is the user's validation set, though its source is named `val`:
    encoding the training set into tokens removed it."""
    other, whole = _split_input(tmp_path / "other"), _split_input(tmp_path / "whole", val=False, seed=3)
    out = tmp_path / "tokens"
    argv = ["encode", f"dvae_weights={weights}", "device=cpu"]
    assert main([*argv, f"input={other / 'val'}", f"output={out / 'val'}"]) == 0
    for _ in range(2):  # without, then with, the output's own index.json
        assert main([*argv, f"input={whole}", f"output={out}"]) == 0
        assert ShardIndex.load(out / "val").total == 4


def test_a_split_linked_into_the_input_is_carried_and_removed_when_the_input_has_none(tmp_path, weights, capsys):
    """An input's `val/` linked to a folder of another name: encode recorded the target's name, so the split it
    carried stayed when the input had none any more."""
    from tests.dvae.conftest import write_image_shards

    linked = _split_input(tmp_path / "linked", val=False)
    write_image_shards(tmp_path / "heldout", 4, 32, 4, seed=1)
    (linked / "val").symlink_to(tmp_path / "heldout")
    out = tmp_path / "tokens"
    argv = ["encode", f"dvae_weights={weights}", f"input={linked}", f"output={out}", "device=cpu"]
    assert main(argv) == 0
    assert ShardIndex.load(out / "val").meta["source"] == str(linked / "val")
    (linked / "val").unlink()
    assert main(argv) == 0
    assert "removed the validation split an earlier encode carried over" in capsys.readouterr().err
    assert not (out / "val").exists()


def test_a_split_a_crash_left_without_its_index_goes_only_where_the_output_says_it_carried_one(tmp_path, weights):
    """Encode's records alone do not tell its split from an encode into `<output>/val` on purpose that crashed: the
    output's own index.json says whether it carried one."""
    split, whole = _split_input(tmp_path / "split"), _split_input(tmp_path / "whole", val=False, seed=3)
    argv = ["encode", f"dvae_weights={weights}", "device=cpu"]
    carried, chosen = tmp_path / "carried", tmp_path / "chosen"
    assert main([*argv, f"input={split}", f"output={carried}"]) == 0
    assert main([*argv, f"input={whole}", f"output={chosen}"]) == 0
    assert main([*argv, f"input={split / 'val'}", f"output={chosen / 'val'}"]) == 0
    for out in (carried, chosen):
        (out / "val" / "index.json").unlink()
        assert main([*argv, f"input={whole}", f"output={out}"]) == 0
    assert not (carried / "val").exists()
    assert sorted(p.name for p in (chosen / "val").glob("*.tar")) == ["shard-000000.tar"]


def test_a_split_indexed_before_encode_recorded_it_is_told_by_its_source(tmp_path, weights):
    """An index.json from before encode recorded {"split": "val"}: the split is the one whose source is the source
    of the output's own index.json, plus val/."""
    split, whole = _split_input(tmp_path / "split"), _split_input(tmp_path / "whole", val=False, seed=3)
    out = tmp_path / "tokens"
    argv = ["encode", f"dvae_weights={weights}", f"output={out}", "device=cpu"]
    assert main([*argv, f"input={split}"]) == 0
    for folder, key in ((out, "carried_split"), (out / "val", "split")):
        index = json.loads((folder / "index.json").read_text())
        del index["meta"][key]
        (folder / "index.json").write_text(json.dumps(index))
    assert main([*argv, f"input={whole}"]) == 0
    assert not (out / "val").exists()


def test_every_rank_of_a_split_encode_refuses_a_stale_split_it_may_not_remove(tmp_path, weights, monkeypatch, capsys):
    """Rank 0 alone looked: it refused, and the other ranks encoded their whole share and exited 0."""
    argv, _, whole, out, before = _stale_split_with_a_note(tmp_path, weights)
    before.pop(Path(".lock"))  # a split encode's ranks name their job in it
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    capsys.readouterr()
    assert main([*argv, f"input={whole}"]) == 2
    assert "and 1 entry encode did not write (notes.txt), so encode does not remove it" in capsys.readouterr().err
    assert {name: data for name, data in file_bytes(out).items() if name != Path(".lock")} == before


def test_a_split_whose_files_vanish_under_another_ranks_look_is_encodes(tmp_path, weights, monkeypatch):
    """Rank 0 removes the split while another rank looks at it: a tar gone with its record is no file of the
    user's, and that rank went on instead of refusing."""
    from megadalle import encoded_split

    split = _split_input(tmp_path / "split")
    out = tmp_path / "tokens"
    assert main(["encode", f"dvae_weights={weights}", f"input={split}", f"output={out}", "device=cpu"]) == 0

    def removed_meanwhile(verb, root, name):
        for path in root.glob(name + "*"):
            path.unlink()
        return False

    monkeypatch.setattr(encoded_split, "may_write_over", removed_meanwhile)
    assert encoded_split.stale_split(out) == out / "val"


def test_a_shard_that_encodes_short_of_its_index_is_an_error_not_the_split_encode_line(tmp_path, image_shards,
                                                                                       weights, capsys):
    """One process that could not complete its own shards (the input changed after it was indexed) said "its shards
    are done; index.json comes when every rank's are" and exited 0: a rerun did the same, for ever."""
    source = tmp_path / "in"
    source.mkdir()
    for path in image_shards.iterdir():
        (source / path.name).write_bytes(path.read_bytes())
    record = json.loads((source / "index.json").read_text())
    record["shards"][0]["count"] += 1  # the index lists a sample the tar no longer holds
    (source / "index.json").write_text(json.dumps(record))
    name = record["shards"][0]["name"]
    assert main(["encode", f"dvae_weights={weights}", f"input={source}", f"output={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        f"megadalle encode: {tmp_path / 'out' / name}: encoded, but not as the {record['shards'][0]['count']} samples "
        f"{source}/index.json lists for {name}: the input changed after it was indexed; index it again "
        f"(`megadalle index {source}`) and rerun the same command")
    assert "comes when every rank's are" not in err and not (tmp_path / "out" / "index.json").exists()
