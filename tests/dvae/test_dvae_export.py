"""`encode dvae_weights=<train-dvae run dir>`: the run's exported file is found where its run.json says, and a file
the run has trained past since (resumed, then stopped before it finished) is refused, naming the fix."""
import json

import pytest

from megadalle.cli import main
from megadalle.config.compose import compose
from megadalle.encode import dvae_weights_file
from megadalle.errors import UserError
from megadalle.train.dvae import FACTORY, task_from_config, train_dvae
from megadalle.train.dvae_export import record_export
from megadalle.train.loop import train_from_config


def fake_run(run, config, weights=None, checkpoint_step=None):
    """A run directory with `config` in its run.json, a weights file, and a complete (empty) checkpoint."""
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"config": config}))
    if weights is not None:
        weights.parent.mkdir(parents=True, exist_ok=True)
        weights.write_bytes(b"weights")
    if checkpoint_step is not None:
        step = run / "checkpoints" / f"step_{checkpoint_step:08d}"
        step.mkdir(parents=True)
        (step / "manifest.json").write_text(json.dumps({"files": {}}))
        return step / "manifest.json"


def test_a_run_that_exported_elsewhere_gives_the_file_its_run_json_records(tmp_path):
    weights = tmp_path / "exp" / "x.safetensors"
    fake_run(tmp_path / "run", {"weights": str(weights)}, weights)
    assert dvae_weights_file(tmp_path / "run") == weights


def test_weights_exported_before_the_runs_newest_checkpoint_are_refused(tmp_path):
    """By the step recorded at the export, not the file's time: a copy of the run (`cp -r`) reads the same."""
    run, weights = tmp_path / "run", tmp_path / "run" / "dvae.safetensors"
    fake_run(run, {"trainer": {"ema": 0.999}}, weights, checkpoint_step=47)
    assert dvae_weights_file(run) == weights  # a run from before the record: read as it was
    record_export(run, 40)
    with pytest.raises(UserError) as refused:
        dvae_weights_file(run)
    message = str(refused.value)
    assert "\n" not in message and f"{weights} holds the weights of step 40, and the run has trained to step 47" \
        in message
    other = run / "dvae-step47.safetensors"  # not the run's own file, which would be refused again
    assert message.endswith(f"rerun train-dvae with the same command to finish and export, or write its newest "
                            f"checkpoint's with `megadalle export run={run} output={other} dtype=fp32` and pass "
                            f"dvae_weights={other}")
    record_export(run, 47)
    assert dvae_weights_file(run) == weights


def test_a_run_of_another_model_is_refused_by_its_kind(tmp_path):
    """A Transformer's run was told to finish as a dVAE; a CLIP run's recorded `weights` were read as the dVAE."""
    clip = tmp_path / "clip.safetensors"
    fake_run(tmp_path / "run", {"weights": str(clip)}, clip)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    (tmp_path / "run" / "run.json").write_text(json.dumps({**record, "task_factory": "megadalle.train.clip:task"}))
    with pytest.raises(UserError, match="a run directory of another model \\(megadalle.train.clip:task\\), not of "
                                        "train-dvae"):
        dvae_weights_file(tmp_path / "run")


def test_a_missing_export_names_the_file_and_the_fix(tmp_path):
    weights = tmp_path / "exp" / "x.safetensors"
    fake_run(tmp_path / "run", {"weights": str(weights)})
    with pytest.raises(UserError, match=f"without its weights {weights} .*rerun train-dvae with the same command"):
        dvae_weights_file(tmp_path / "run")


def test_a_resumed_run_stopped_before_it_finished_is_refused_until_it_finishes(tmp_path, image_shards, capsys):
    """A real run: finished at step 2 (exported outside the run directory), resumed to 4 and stopped before its
    export (the trainer alone, as a signal leaves it), then finished by the same command."""
    weights = tmp_path / "exp" / "dvae.safetensors"
    overrides = [f"data.shards={image_shards}", "data.num_workers=0", "dvae=tiny", "dvae.n_hid=16",
                 "dvae.vocab_size=64", "trainer=tiny", "trainer.steps=2", "trainer.checkpoint_every=2",
                 "logger=none", f"run_dir={tmp_path / 'run'}", f"weights={weights}"]
    assert train_dvae(compose("train-dvae", overrides)) == weights
    assert dvae_weights_file(tmp_path / "run") == weights
    resumed = compose("train-dvae", [*overrides, "trainer.steps=4"])
    assert train_from_config(task_from_config(resumed), resumed, FACTORY).step == 4
    with pytest.raises(UserError, match="holds the weights of step 2, and the run has trained to step 4"):
        dvae_weights_file(tmp_path / "run")
    capsys.readouterr()
    assert main(["train-dvae", *overrides, "trainer.steps=4"]) == 0
    assert dvae_weights_file(tmp_path / "run") == weights


def test_export_of_a_dvae_run_keeps_fp32_unless_told(tmp_path, image_shards, capsys):
    """`export run=<train-dvae run>` wrote bf16 by default, as for the Transformer: encode with it changed about 1%
    of the codes, while train-dvae's own export keeps fp32. `dtype=auto` now picks per run; a dtype given wins."""
    from safetensors import safe_open

    run = tmp_path / "run"
    train_dvae(compose("train-dvae", [f"data.shards={image_shards}", "data.num_workers=0", "dvae=tiny",
                                      "dvae.n_hid=16", "dvae.vocab_size=64", "trainer.steps=1",
                                      "trainer.micro_batch=4", "logger=none", f"run_dir={run}"]))
    capsys.readouterr()
    for extra, dtype, name in (([], "F32", "fp32"), (["dtype=bf16"], "BF16", "bf16")):
        out = tmp_path / f"{name}.safetensors"
        assert main(["export", f"run={run}", f"output={out}", *extra]) == 0
        assert f"[export] wrote {out} ({name}, the EMA weights of step_00000001)" in capsys.readouterr().err
        with safe_open(str(out), "pt") as f:
            assert {f.get_slice(key).get_dtype() for key in f.keys()} == {dtype}
