"""generate's scores.json and evaluate's metrics.json on a full disk. Written in place, they were left empty, which
counts as finished results: the same command was then refused ("holds an earlier generate's results"), and
generate's saved batches could only be discarded. Now the record is whole or absent, the failure one line, and the
same command continues."""
import errno
import json
import os
from pathlib import Path

import pytest

from megadalle.cli import main
from tests.tiny_models import write_tiny_models


@pytest.fixture
def models(tmp_path):
    write_tiny_models(tmp_path)
    (tmp_path / "captions.txt").write_text("a red circle\na blue square\n")
    return tmp_path


@pytest.fixture
def full_for(monkeypatch):
    """full_for(name): a file whose name holds `name` is made, as on a full disk, and its first write fails."""
    real = Path.open

    def full(name):
        def open_(self, mode="r", *args, **kwargs):
            file = real(self, mode, *args, **kwargs)
            if name in self.name and "w" in mode:
                file.close()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return file

        monkeypatch.setattr(Path, "open", open_)
        return lambda: monkeypatch.setattr(Path, "open", real)

    return full


def the_line(capsys, verb):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"megadalle {verb}:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_generate_without_room_for_scores_json_keeps_its_batches_and_the_same_command_continues(
        models, tmp_path, capsys, full_for):
    args = ["generate", f"weights={models / 'model.safetensors'}", "prompt=a red circle", "n=4", "batch_size=2"]
    assert main([*args, f"output={tmp_path / 'reference'}"]) == 0
    out = tmp_path / "out"
    free = full_for("scores.json")
    assert main([*args, f"output={out}"]) == 2
    assert the_line(capsys, "generate") == (f"megadalle generate: cannot write {out / 'scores.json'} (No space left on "
                                            "device): free space on its disk, then rerun the same command: it "
                                            "continues from the samples saved so far")
    assert not [p.name for p in out.glob("*scores.json*")] and (out / "unfinished.safetensors").is_file()
    free()
    assert main([*args, f"output={out}"]) == 0
    assert "[generate] continuing: 4 of 4 samples are saved" in capsys.readouterr().err
    got, reference = (json.loads((folder / "scores.json").read_text()) for folder in (out, tmp_path / "reference"))
    assert (got["kept"], got["all_scores"]) == (reference["kept"], reference["all_scores"])
    assert not (out / "unfinished.safetensors").exists()


def test_evaluate_without_room_for_metrics_json_leaves_none_and_the_same_command_runs(models, tmp_path, capsys,
                                                                                      full_for):
    out = tmp_path / "eval"
    args = ["evaluate", f"weights={models / 'model.safetensors'}", f"captions={models / 'captions.txt'}", "fid=false",
            "device=cpu", "n=1", f"output={out}"]
    free = full_for("metrics.json")
    assert main(args) == 2
    assert the_line(capsys, "evaluate") == (f"megadalle evaluate: cannot write {out / 'metrics.json'} (No space left "
                                            "on device): free space on its disk, then rerun the same command")
    assert not list(out.glob("*metrics.json*")) and not (out / "metrics.md").exists()  # no results of this run alone
    free()
    assert main(args) == 0 and (out / "metrics.json").is_file()


@pytest.fixture
def png_full_for(monkeypatch):
    """png_full_for(name): a PNG whose file name holds `name` is encoded whole, then the disk refuses it (ENOSPC),
    as a close that flushes last fails: PIL, writing in place, had left the file there, truncated."""
    from PIL import Image

    real = Image.Image.save

    def full(name):
        def save(self, fp, *args, **kwargs):
            real(self, fp, *args, **kwargs)
            if name in str(getattr(fp, "name", fp)):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(Image.Image, "save", save)
        return lambda: monkeypatch.setattr(Image.Image, "save", real)

    return full


@pytest.mark.parametrize("refused", ["grid.png", "sample_01.png"])
def test_generate_without_room_for_its_images_leaves_none_and_the_same_command_continues(
        models, tmp_path, capsys, png_full_for, refused):
    args = ["generate", f"weights={models / 'model.safetensors'}", "prompt=a red circle", "n=4", "keep=2",
            "batch_size=2", f"output={tmp_path / 'out'}"]
    out = tmp_path / "out"
    free = png_full_for(refused)
    assert main(args) == 2
    assert the_line(capsys, "generate") == (f"megadalle generate: cannot write {out / refused} (No space left on "
                                            "device): free space on its disk, then rerun the same command: it "
                                            "continues from the samples saved so far")
    assert sorted(p.name for p in out.iterdir()) == ["unfinished.safetensors"]  # no image, whole or not, no record
    free()
    assert main(args) == 0
    assert "[generate] continuing: 4 of 4 samples are saved" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.png")) == ["grid.png", "sample_00.png", "sample_01.png"]


def test_evaluate_without_room_for_metrics_md_or_a_sample_leaves_no_results(models, tmp_path, capsys, full_for,
                                                                             png_full_for):
    out = tmp_path / "eval"
    args = ["evaluate", f"weights={models / 'model.safetensors'}", f"captions={models / 'captions.txt'}", "fid=false",
            "device=cpu", "n=1", f"output={out}", "save_samples=true"]
    free = full_for("metrics.md")
    assert main(args) == 2
    assert the_line(capsys, "evaluate") == (f"megadalle evaluate: cannot write {out / 'metrics.md'} (No space left "
                                            "on device): free space on its disk, then rerun the same command")
    assert not list(out.glob("metrics*")) and not list(out.glob("**/.*.tmp"))
    free()
    free = png_full_for("0001_000.png")
    assert main(args) == 2
    assert the_line(capsys, "evaluate") == (f"megadalle evaluate: cannot write {out / 'samples' / '0001_000.png'} (No "
                                            "space left on device): free space on its disk, then rerun the same "
                                            "command")
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["0000_000.png", "index.json"]
    assert not list(out.glob("metrics*"))
    free()
    assert main(args) == 0 and (out / "metrics.json").is_file() and (out / "metrics.md").is_file()


def test_generate_without_room_for_its_saved_batches_stops_in_one_line_and_the_same_command_continues(
        models, tmp_path, capsys, monkeypatch):
    """unfinished.safetensors, written after each batch, raised a full disk's OSError as a traceback."""
    real, writes = Path.open, []

    def second_full(self, mode="r", *args, **kwargs):
        if "unfinished.safetensors" in self.name and "w" in mode:
            writes.append(self.name)
            if len(writes) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, mode, *args, **kwargs)

    out = tmp_path / "out"
    args = ["generate", f"weights={models / 'model.safetensors'}", "prompt=a red circle", "n=4", "batch_size=2",
            f"output={out}"]
    monkeypatch.setattr(Path, "open", second_full)
    assert main(args) == 2
    assert the_line(capsys, "generate") == (
        f"megadalle generate: cannot write {out / 'unfinished.safetensors'} (No space left on device): free space on "
        "its disk, then rerun the same command: it continues from the samples saved so far")
    monkeypatch.setattr(Path, "open", real)
    assert main(args) == 0
    assert "[generate] continuing: 2 of 4 samples are saved" in capsys.readouterr().err
