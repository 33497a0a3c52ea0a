"""What `export output=FOLDER` writes, as a user finds it: bundle.json put in place last and whole, what it records
(checked against the run's run.json and the files, read here with json and hashlib), and no folder left behind by
an export that failed in one it made."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

import megadalle.bundle_write as bundle_write
from megadalle.bundle_write import write_bundle


def test_bundle_json_is_renamed_into_place_whole_after_everything_else(trained, tmp_path, monkeypatch):
    """A reader finds bundle.json complete or not at all (a copy cut short is a "garbled" folder), and only once the
    Transformer, tokenizer and dVAE are there: it arrives last, by the rename of a hidden file beside it."""
    run, tok, dvae, _ = trained
    renamed = []
    real = os.replace

    def spy(src, dst, *args, **kwargs):
        renamed.append((Path(src), Path(dst)))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spy)
    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(dvae))
    monkeypatch.undo()
    src, dst = renamed[-1]
    assert dst == folder / "bundle.json" and src.parent == folder and src.name.startswith(".bundle.json")
    assert sorted(p.name for p in folder.iterdir()) == ["bundle.json", "dvae.json", "dvae.safetensors",
                                                       "tokenizer.model", "transformer"]


def test_bundle_json_records_the_run_its_pieces_and_their_contents(trained, tmp_path, monkeypatch):
    """Given as a relative path, the run is recorded absolute (its readers are anywhere); no CLIP is recorded for a
    folder exported without one; the run's config is run.json's; the tokenizer's digest is of the copied file."""
    run, tok, dvae, _ = trained
    monkeypatch.chdir(run.parent)
    folder = write_bundle(Path(run.name), tmp_path / "model", dvae_weights=str(dvae))
    manifest = json.loads((folder / "bundle.json").read_text())
    assert manifest["sources"]["run"] == os.path.realpath(run)
    assert manifest["sources"]["dvae"] == str(dvae) and manifest["sources"]["clip"] is None
    assert manifest["clip"] is None and (manifest["dvae"], manifest["tokenizer"]) == ("dvae.safetensors",
                                                                                       "tokenizer.model")
    assert manifest["run_config"] == json.loads((run / "run.json").read_text())["config"]
    assert manifest["sha256"]["tokenizer"] == hashlib.sha256(tok.read_bytes()).hexdigest()
    assert manifest["ema"] is False  # the run trained no EMA: its live weights


def test_a_failed_export_into_a_folder_it_made_leaves_no_folder(trained, tmp_path, monkeypatch):
    """A folder holding a Transformer but no bundle.json would read as an unfinished export; one the export made
    itself goes, so that the same command can simply be run again."""
    run, _, dvae, _ = trained

    def full_disk(*args):
        raise OSError("No space left on device")

    monkeypatch.setattr(bundle_write, "_copy", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_bundle(run, tmp_path / "new" / "model", dvae_weights=str(dvae))
    assert not (tmp_path / "new" / "model").exists()


def test_a_folder_exported_without_clip_loads_without_one_and_another_format_is_refused(trained, tmp_path):
    """load_pipeline reads no CLIP where bundle.json records none (rerank=True is the default), and refuses a
    bundle.json of a format other than the one its export wrote, naming both."""
    import megadalle
    from megadalle.errors import BundleError

    run, _, dvae, _ = trained
    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(dvae))
    pipe = megadalle.load_pipeline(folder)
    assert pipe.clip is None and pipe.reranker is None
    manifest = json.loads((folder / "bundle.json").read_text())
    written = manifest["format"]
    (folder / "bundle.json").write_text(json.dumps({**manifest, "format": "megadalle-bundle-v999"}))
    with pytest.raises(BundleError, match=f"format 'megadalle-bundle-v999', expected {written!r}"):
        megadalle.load_pipeline(folder)
