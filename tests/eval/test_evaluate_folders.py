"""`evaluate weights=FOLDER` reads a model folder's pieces as `generate` does: its own CLIP or open_clip
reranker, and none at all for a folder exported without one (a CLIP lying beside the folder is another model's)."""
from __future__ import annotations

import json
import shutil

from megadalle.bundle_write import write_bundle
from megadalle.cli import main
from megadalle.weights import config_path
from tests.imports.conftest import trained  # noqa: F401  (the tiny Transformer run, dVAE, CLIP and tokenizer)


def test_a_folder_without_clip_uses_none_beside_it(trained, tmp_path, capsys):  # noqa: F811
    run, tok, dvae, clip = trained
    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(dvae))
    for source in (clip, config_path(clip)):  # another model's CLIP, beside the folder
        shutil.copyfile(source, tmp_path / source.name)
    captions = tmp_path / "captions.txt"
    captions.write_text("red cat\n")
    args = ["evaluate", f"weights={folder}", f"captions={captions}", "n=2", "batch_size=2", "device=cpu",
            "fid=false"]
    assert main([*args, f"output={tmp_path / 'a'}"]) == 2
    err = capsys.readouterr().err
    assert "exported without a CLIP: pass clip_score=false with save_samples=true" in err and "Traceback" not in err
    assert main([*args, "clip_score=false", "save_samples=true", f"output={tmp_path / 'b'}"]) == 0
    report = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert report["captions"] == 1 and report["clip_score"] is None
