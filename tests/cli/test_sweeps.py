"""hydra-native verbs: `-m` sweeps run every job through the same checks and stage, a training sweep
resumes job by job when rerun (the submitit launcher's test is tests/slurm/test_submitit.py)."""
import pytest

from megadalle.cli import main
from megadalle.hydra_app import hydra_argv


@pytest.mark.distributed
def test_sweep_trains_one_run_per_job_and_a_rerun_resumes_them(train_overrides, tmp_path, capsys):
    sweep = ["train", "-m", "trainer.lr=0.001,0.0003", *train_overrides, f"out_dir={tmp_path}"]
    assert main([*sweep, "trainer.steps=1"]) == 0
    runs = [tmp_path / "multirun" / "train" / str(job) for job in (0, 1)]
    for run, lr in zip(runs, (0.001, 0.0003)):
        assert (run / "checkpoints" / "latest").read_text() == "step_00000001"
        assert f'"lr": {lr}' in (run / "run.json").read_text()
    capsys.readouterr()
    assert main([*sweep, "trainer.steps=2"]) == 0
    out = capsys.readouterr().out
    for run in runs:
        assert f"resumed from {run.resolve()}/checkpoints/step_00000001 at step 1" in out
        assert (run / "checkpoints" / "latest").read_text() == "step_00000002"


def test_generate_and_evaluate_sweep_jobs_each_write_to_their_own_folder(tmp_path, capsys):
    """Every job of `generate -m` wrote to <out_dir>/generate, one over the other, and only the last survived;
    each job writes to its own job folder, as the README says."""
    import json

    from tests.tiny_models import write_tiny_models

    write_tiny_models(tmp_path)
    (tmp_path / "captions.txt").write_text("a red circle\n")
    weights = f"weights={tmp_path / 'model.safetensors'}"
    assert main(["generate", "-m", weights, "prompt=a red circle,a blue circle", "n=2", "keep=1",
                 f"out_dir={tmp_path}"]) == 0
    assert main(["evaluate", "-m", weights, f"captions={tmp_path / 'captions.txt'}", "fid=false", "n=1,2",
                 "device=cpu", f"out_dir={tmp_path}"]) == 0
    jobs = [tmp_path / "multirun" / verb / str(job) for verb in ("generate", "evaluate") for job in (0, 1)]
    prompts = [json.loads((job / "scores.json").read_text())["prompt"] for job in jobs[:2]]
    samples = [json.loads((job / "metrics.json").read_text())["samples_per_caption"] for job in jobs[2:]]
    assert (prompts, samples) == (["a red circle", "a blue circle"], [1, 2])
    assert not (tmp_path / "generate").exists() and not (tmp_path / "evaluate").exists()
    capsys.readouterr()
    assert main(["generate", "-m", weights, "prompt=a red circle,a blue circle", "n=2", "keep=1",
                 f"out_dir={tmp_path}"]) == 0  # the same sweep again: its jobs are done
    assert capsys.readouterr().out.count("done already (same settings); skipped") == 2
    assert main(["generate", "-m", weights, "prompt=a red circle", "n=2", "keep=2", f"out_dir={tmp_path}"]) == 2
    assert f"output={jobs[0]}: holds an earlier generate's results" in capsys.readouterr().err


def test_a_sweep_given_an_output_writes_each_job_to_its_number_under_it(tmp_path, capsys):
    """With `output=DIR` every job wrote to DIR: job 1 found job 0's results there and the sweep stopped (with
    overwrite=true each job replaced the one before); DIR is now the sweep's folder, job i's DIR/<i>."""
    import json

    from tests.tiny_models import write_tiny_models

    write_tiny_models(tmp_path)
    (tmp_path / "captions.txt").write_text("a red circle\n")
    weights = f"weights={tmp_path / 'model.safetensors'}"
    given = tmp_path / "given"
    sweep = ["generate", "-m", weights, "prompt=a red circle", "n=2", "keep=1", "seed=0,1", f"output={given / 'gen'}",
             f"out_dir={tmp_path}"]
    assert main(sweep) == 0
    assert main(["evaluate", "-m", weights, f"captions={tmp_path / 'captions.txt'}", "fid=false", "n=1,2",
                 "device=cpu", f"output={given / 'eval'}", f"out_dir={tmp_path}"]) == 0
    seeds = [json.loads((given / "gen" / str(job) / "scores.json").read_text())["seed"] for job in (0, 1)]
    samples = [json.loads((given / "eval" / str(job) / "metrics.json").read_text())["samples_per_caption"]
               for job in (0, 1)]
    assert (seeds, samples) == ([0, 1], [1, 2])
    assert sorted(p.name for p in given.iterdir()) == ["eval", "gen"]
    assert not (tmp_path / "multirun" / "generate" / "0" / "scores.json").exists()
    capsys.readouterr()
    assert main(sweep) == 0  # the same sweep again: its jobs are done
    out = capsys.readouterr().out
    assert all(f"[generate] output={given / 'gen' / str(job)}: done already (same settings); skipped\n" in out
               for job in (0, 1)), out
    assert main([*sweep, "keep=2"]) == 2  # other results: refused as a plain rerun is
    assert f"output={given / 'gen' / '0'}: holds an earlier generate's results" in capsys.readouterr().err
    assert main([*sweep, "keep=2", "overwrite=true"]) == 0


def test_ctrl_c_in_a_sweep_job_stops_the_sweep_with_exit_code_130(tmp_path, capsys, monkeypatch):
    import megadalle.sample
    from tests.tiny_models import write_tiny_models

    calls = []

    def interrupt(*args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    write_tiny_models(tmp_path)
    monkeypatch.setattr(megadalle.sample, "generate", interrupt)
    assert main(["generate", "-m", f"weights={tmp_path / 'model.safetensors'}", "prompt=a red circle", "n=1",
                 "seed=0,1", f"out_dir={tmp_path}"]) == 130
    assert len(calls) == 1 and "interrupted" in capsys.readouterr().err


def test_a_stop_signal_in_a_sweep_job_stops_the_sweep_with_exit_code_75(tmp_path, capsys, monkeypatch):
    """TERM killed the whole sweep with 143 and nothing said; now the job ends as one line and the sweep with it."""
    import os
    import signal
    import time

    import megadalle.sample
    from megadalle.train.signals import STOPPED_EXIT
    from tests.tiny_models import write_tiny_models

    calls = []

    def terminated(*args, **kwargs):
        calls.append(1)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    write_tiny_models(tmp_path)
    monkeypatch.setattr(megadalle.sample, "generate", terminated)
    assert main(["generate", "-m", f"weights={tmp_path / 'model.safetensors'}", "prompt=a red circle", "n=1",
                 "seed=0,1", f"out_dir={tmp_path}"]) == STOPPED_EXIT
    assert len(calls) == 1 and "megadalle generate: stopped by SIGTERM" in capsys.readouterr().err


def test_sweep_jobs_get_the_plain_runs_checks(train_overrides, tmp_path, capsys):
    shards = next(o for o in train_overrides if o.startswith("data.shards="))
    assert main(["train", "-m", "trainer.lr=0.001,0.0003", shards, f"out_dir={tmp_path}"]) == 2
    assert "required key not set: data.tokenizer" in capsys.readouterr().err
    assert main(["plan", "-m", "model=tiny,huge"]) == 2
    assert "model=huge: no such model config; choose one of 12b, 1b, small, tiny" in capsys.readouterr().err


def test_overrides_may_come_before_and_after_hydras_flags(tmp_path, capsys):
    assert hydra_argv("plan", ["a=1", "-m", "b=2", "--cfg", "job", "~c"]) == \
        ["megadalle plan", "a=1", "b=2", "~c", "hydra.job.name=plan", "hydra.output_subdir=null", "-m", "--cfg", "job"]
    assert main(["plan", "gpus=1", "-m", "model=tiny", "gpu_mem_gb=8", f"out_dir={tmp_path}"]) == 0
    assert "7.2 GB (8 GB less 10% headroom)" in capsys.readouterr().out  # gpu_mem_gb=8 reached plan
    overrides = (tmp_path / "multirun" / "plan" / "0" / ".hydra" / "overrides.yaml").read_text()
    assert "gpus=1" in overrides and "gpu_mem_gb=8" in overrides


def test_a_flag_with_an_optional_value_may_come_last(capsys):
    import logging

    # hydra's --info gives the root logger a handler on this test's captured stdout: later tests' log records
    # would meet it closed ("--- Logging error ---" in their stderr)
    handlers, level = logging.root.handlers[:], logging.root.level
    try:
        assert main(["plan", "--info"]) == 0  # hydra.job.name=plan was read as --info's value
        assert "Config search path" in capsys.readouterr().out
        assert main(["plan", "--info", "searchpath", "model=tiny"]) == 0
    finally:
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)


def test_a_signal_that_stops_a_sweep_job_stops_the_sweep_with_its_status(train_overrides, tmp_path, monkeypatch):
    """Slurm's TERM or USR1 stops the job's run with status 75 (a checkpoint to resume); the sweep went on with the
    next job, which the scheduler was about to kill, and exited 0 as if every job had finished."""
    import megadalle.cli
    from megadalle.train.signals import STOPPED_EXIT

    jobs = []
    monkeypatch.setattr(megadalle.cli, "resolve", lambda verb: lambda cfg: jobs.append(cfg.seed) or STOPPED_EXIT)
    assert main(["train", "-m", *train_overrides, "seed=0,1", f"out_dir={tmp_path}"]) == STOPPED_EXIT
    assert jobs == [0]


def test_a_sweep_only_another_sweeper_reads_is_left_to_it():
    """A sweeper chosen by a config (not on the command line) may read sweeps hydra's basic one cannot split
    (`interval()`): the up-front check split them first and ended the command with the basic sweeper's error."""
    from megadalle.sweep_jobs import check_jobs

    check_jobs("plan", ["trainer.lr=interval(1e-4,1e-3)"])
