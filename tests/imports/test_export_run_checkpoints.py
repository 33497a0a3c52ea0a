"""A run's checkpoints folder and an export: no export is written into it (the run prunes it as it trains on, and
took an export with it), and `checkpoint=` is one of the run's own (another run's weights of the same shapes were
written beside this run's tokenizer and record, in silence)."""
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


def test_an_export_into_a_runs_checkpoints_is_refused(trained, capsys):
    run = trained[0]
    for output in (run / STEP / "mine.safetensors", run / "checkpoints" / "mine", run / "checkpoints"):
        assert main(["export", f"run={run}", f"output={output}", "weights_only=true"]) == 2
        assert one_line(capsys) == (f"output={output}: inside the checkpoints of the training run {run}, which "
                                    "deletes there what it does not keep (trainer.keep_checkpoints), an export "
                                    "too; give another path")
        assert not (run / STEP / "mine.safetensors").exists() and not (run / "checkpoints" / "mine").exists()


def test_a_checkpoint_of_another_run_is_refused_naming_its_run(trained, trained_ema, tmp_path, capsys):
    run, other = trained[0], trained_ema[0]
    output = tmp_path / "w.safetensors"
    assert main(["export", f"run={run}", f"checkpoint={other / STEP}", f"output={output}"]) == 2
    assert one_line(capsys) == (f"checkpoint={other / STEP}: a checkpoint of the training run {other}, not of "
                                f"run={run}, whose record would describe other weights; pass run={other} with it")
    assert not output.exists()
    copied = tmp_path / "step_00000002"
    copied.symlink_to(other / STEP)
    assert main(["export", f"run={run}", f"checkpoint={copied}", f"output={output}"]) == 2
    assert one_line(capsys).startswith(f"checkpoint={copied}: a checkpoint of the training run {other}, not of ")
    assert main(["export", f"run={run}", f"checkpoint={run / STEP}", f"output={output}"]) == 0
    assert output.is_file()


def test_a_checkpoint_of_no_run_is_refused(trained, tmp_path, capsys):
    run, elsewhere = trained[0], tmp_path / "step_00000002"
    elsewhere.mkdir()
    assert main(["export", f"run={run}", f"checkpoint={elsewhere}", f"output={tmp_path / 'w.safetensors'}"]) == 2
    assert one_line(capsys) == (f"checkpoint={elsewhere}: not in the checkpoints folder of run={run} "
                                f"({(run / 'checkpoints').resolve()}); pass one of its step_* folders, or the "
                                "training run this checkpoint came from as run=")


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


def test_a_file_of_the_runs_own_checkpoint_or_its_checkpoints_folder_names_what_to_pass(trained, tmp_path, capsys):
    """Both were "a checkpoint of the training run RUN, not of run=RUN": the run's own files called another's."""
    run, output = trained[0], tmp_path / "w.safetensors"
    given = run / STEP / "mp_rank_00_model_states.pt"
    assert main(["export", f"run={run}", f"checkpoint={given}", f"output={output}"]) == 2
    assert one_line(capsys) == (f"checkpoint={given}: a file of the checkpoint step_00000002 of run={run}, not a "
                                f"step_* folder; pass checkpoint={(run / STEP).resolve()}")
    assert main(["export", f"run={run}", f"checkpoint={run / 'checkpoints'}", f"output={output}"]) == 2
    assert one_line(capsys) == (f"checkpoint={run / 'checkpoints'}: the checkpoints folder of run={run}; checkpoint= "
                                "takes one of its step_* folders (left out, the newest complete one is taken)")
    assert not output.exists()


def test_a_checkpoint_named_as_its_folder_lists_it_or_by_its_step_is_the_runs(trained, tmp_path, capsys, monkeypatch):
    """`checkpoint=step_00000002`, as `ls RUN/checkpoints` shows it, was refused as "not in the checkpoints folder" of
    the run that held it (resolved against the folder the command ran in). A path that exists here stays a path.
    The export says and records which checkpoint it read."""
    from safetensors.torch import load_file

    from megadalle.weights import read_source

    run = trained[0]
    monkeypatch.chdir(tmp_path)
    exported = {}
    for given in ("step_00000002", "2", str(run / STEP)):
        output = tmp_path / f"w{len(exported)}.safetensors"
        assert main(["export", f"run={run}", f"checkpoint={given}", f"output={output}", "dtype=fp32"]) == 0, \
            capsys.readouterr().err
        exported[given] = load_file(output)
        assert read_source(output) == {"run": str(run.resolve()), "checkpoint": "step_00000002", "ema": False}
    assert capsys.readouterr().err.count("(fp32, the live weights of step_00000002)\n") == 3  # exports of a run
    # still training were each of an unknown step, their files alike but for the tensors
    assert all(set(weights) == set(exported["2"]) and all(weights[k].equal(exported["2"][k]) for k in weights)
               for weights in exported.values())
    assert main(["export", f"run={run}", "checkpoint=step_00000099", f"output={tmp_path / 'x.safetensors'}"]) == 2
    assert one_line(capsys).startswith(f"checkpoint=step_00000099: {run / 'checkpoints' / 'step_00000099'}")
    (tmp_path / "step_00000002").mkdir()  # a folder of that name here is what was meant
    assert main(["export", f"run={run}", "checkpoint=step_00000002", f"output={tmp_path / 'y.safetensors'}"]) == 2
    assert one_line(capsys).startswith("checkpoint=step_00000002: not in the checkpoints folder of run=")
