"""A run's checkpoints folder and an export."""
from __future__ import annotations

import json
import re
import shlex

from megadalle.cli import main

STEP = "checkpoints/step_00000002"


def one_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err.removeprefix("megadalle export: ").strip()


def test_the_export_generate_advises_for_a_checkpoint_runs_as_printed(trained, tmp_path, capsys):
    """`megadalle export run=R checkpoint=S output=DIR` was refused as pasted ("dvae_weights: not given and not
    recorded"): a run trained without media records no dVAE. The advice names the one generate was given."""
    run, _, dvae, _ = trained
    step = run / STEP
    assert main(["generate", f"weights={step}", f"dvae_weights={dvae}", "prompt=red", "n=1",
                 f"output={tmp_path / 'out'}"]) == 2
    advice = re.search(r"`megadalle ([^`]*)`, then weights=DIR$", one_line(capsys).removeprefix("megadalle generate: "))
    folder = tmp_path / "my model"
    argv = [word.replace("DIR", str(folder)) for word in shlex.split(advice[1])]
    assert main(argv) == 0
    assert json.loads((folder / "bundle.json").read_text())["sources"]["dvae"] == str(dvae)
