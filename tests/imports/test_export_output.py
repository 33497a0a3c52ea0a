"""What `export weights_only=true` may write over: an earlier export of the same kind holding nothing else, never a
folder holding other files (a Hugging Face model, an export with a model card added), nor a model folder's
Transformer behind its bundle.json's back."""
from __future__ import annotations

import json
import shlex

import torch
from safetensors.torch import save_file

from megadalle.bundle_write import write_bundle
from megadalle.cli import main
from megadalle.weights import INDEX


def contents(folder):
    return {str(p.relative_to(folder)): p.is_dir() or p.read_bytes() for p in sorted(folder.rglob("*"))}


def one_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err.removeprefix("megadalle export: ").strip()


def test_weights_only_deletes_no_file_it_did_not_write(trained, tmp_path, capsys):
    """Any folder holding an index was taken for an earlier export and replaced whole (rc 0): a Hugging Face
    model folder lost its tokenizer and model card, an earlier export the card its user added."""
    run = trained[0]
    hf = tmp_path / "hf"
    hf.mkdir()
    save_file({"w": torch.zeros(2)}, str(hf / "model-00001-of-00001.safetensors"), metadata={"format": "pt"})
    (hf / INDEX).write_text(json.dumps({"metadata": {"total_size": 8},
                                        "weight_map": {"w": "model-00001-of-00001.safetensors"}}))
    for name in ("config.json", "tokenizer.json", "README.md"):
        (hf / name).write_text("{}")
    before = contents(hf)
    assert main(["export", f"run={run}", f"output={hf}", "weights_only=true"]) == 2
    assert one_line(capsys) == (f"output={hf}: holds files an export does not write (README.md, tokenizer.json), "
                                "which replacing the folder would delete; give another path, or move them out")
    assert contents(hf) == before

    earlier = tmp_path / "weights"
    assert main(["export", f"run={run}", f"output={earlier}", "weights_only=true"]) == 0
    assert main(["export", f"run={run}", f"output={earlier}", "weights_only=true", "dtype=fp32"]) == 0  # replaced
    capsys.readouterr()
    (earlier / "README.md").write_text("my model card")
    before = contents(earlier)
    assert main(["export", f"run={run}", f"output={earlier}", "weights_only=true"]) == 2
    assert "holds files an export does not write (README.md)" in one_line(capsys)
    assert contents(earlier) == before


def test_weights_into_a_model_folder_are_refused_with_or_without_weights_only(trained, tmp_path, capsys):
    """`output=model/transformer` replaced the folder's Transformer without the folder export's checks (its
    tokenizer, its dVAE), and its bundle.json went on describing the earlier run; without weights_only,
    `output=model/transformer.safetensors` still wrote there (exit code 0), and `output=model/transformer` was told
    to remove it."""
    run, _, dvae, clip = trained
    folder = write_bundle(run, tmp_path / "my model", dvae_weights=str(dvae), clip_weights=str(clip))
    advised = shlex.join(["export", f"run={run}", f"output={folder}", f"tokenizer={folder / 'tokenizer.model'}",
                          f"dvae_weights={folder / 'dvae.safetensors'}", f"clip_weights={folder / 'clip.safetensors'}"])
    assert "'output=" in advised  # the folder's name holds a space
    before = contents(folder)
    for output, keys in ((folder / "transformer", ["weights_only=true"]),
                         (folder / "transformer.safetensors", ["weights_only=true"]),
                         (folder / "transformer.safetensors", []), (folder / "transformer", []),
                         (folder / "sub" / "x.safetensors", [])):
        assert main(["export", f"run={run}", f"output={output}", *keys]) == 2
        assert one_line(capsys) == (
            f"output={output}: inside the model folder {folder}, whose tokenizer, dVAE and bundle.json a "
            f"Transformer exported alone would not match; export the whole folder with `megadalle {advised}`, or "
            "give another path")
        assert contents(folder) == before
    assert main(["export", f"run={run}", f"output={folder}", "weights_only=true"]) == 2
    assert one_line(capsys).startswith(f"output={folder}: a model folder, whose tokenizer, dVAE and bundle.json")
    assert contents(folder) == before
    assert main(shlex.split(advised)) == 0  # the folder's own export, as advised: its dVAE and CLIP kept
    assert json.loads((folder / "bundle.json").read_text())["clip"] == "clip.safetensors"
    assert (folder / "clip.safetensors").read_bytes() == clip.read_bytes()
