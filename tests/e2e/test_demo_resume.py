"""Rerunning `megadalle demo` continues it, and a stop signal in any stage ends it with 75 and one true line.

A rerun of the same command refused to start (its stages trained with resume=never, so their checkpoints were in
the way), after drawing its data again; a finished demo could not be rerun either. The demo here is the smallest
that runs every stage (2 updates each, one sample per caption): seconds per run."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import megadalle.demo as demo
from megadalle.config.compose import compose
from megadalle.errors import UserError
from megadalle.train.signals import STOPPED_EXIT
from tests.launch_signals import signal_once_taken

ROOT = Path(__file__).resolve().parents[2]
TINY = ["demo=fast", "demo.per_scene=1", "demo.dvae_steps=2", "demo.dvae_batch=8", "demo.clip_steps=2",
        "demo.clip_batch=8", "demo.steps=2", "demo.batch=8", "demo.samples=1", "demo.keep=1", "demo.holdout=1",
        "demo.seen=0", "demo.check_per_scene=1"]
UPDATE = re.compile(r"^step \d+: loss=", re.M)


def run_demo(out: Path, capsys, *overrides: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of the tiny demo into `out`, in this process."""
    code = demo.run(compose("demo", [*TINY, *overrides, f"output={out}"]))
    printed = capsys.readouterr()
    return code, printed.out, printed.err


def last_line(err: str) -> str:
    """The demo's own last line on stderr (DeepSpeed's start-up warnings may come before it)."""
    return err.rstrip("\n").rsplit("\n", 1)[-1]


def data_mtimes(out: Path) -> dict[Path, int]:
    """When each image, shard, token shard, the tokenizer and the data stages' records were written (encode writes
    its index.json again on every run)."""
    files = [p for folder in ("raw", "shards", "shards_clip", "tokens", "made") for p in (out / folder).rglob("*")
             if p.is_file() and p.relative_to(out) != Path("tokens/index.json")]
    return {p: p.stat().st_mtime_ns for p in [*files, out / "tokenizer.model"]}


def test_a_rerun_of_a_finished_demo_trains_and_draws_nothing_again_and_one_on_other_settings_is_refused_first(
        tmp_path, capsys):
    out = tmp_path / "demo"
    code, printed, err = run_demo(out, capsys)
    assert code == 0, err[-3000:]
    assert len(UPDATE.findall(printed)) == 6  # 2 updates in each of the three training stages
    data = data_mtimes(out)

    code, printed, err = run_demo(out, capsys)
    assert code == 0, err[-3000:]
    assert not UPDATE.findall(printed), printed[-3000:]
    for run in ("dvae", "clip", "dalle"):
        assert f"resumed from {out}/runs/{run}/checkpoints/step_00000002 at step 2" in printed, printed[-3000:]
    assert "[demo] data: kept from an earlier run" in printed and "[demo] clip_images: kept" in printed
    assert data == data_mtimes(out), "a rerun drew, prepared or encoded its data again"
    assert printed.rstrip().endswith("(chance 2%)")

    # other data (drawn again in place, the tokenizer too, before a stage refused to resume on it) or a model the
    # checkpoints do not fit is refused before anything is written, naming the setting; the way out is the demo's
    for override, differs in (("demo.per_scene=2", "demo.per_scene: 1 there, 2 now"),
                               ("demo.vocab_size=80", "demo.vocab_size: 64 there, 80 now"),
                               ("demo.text_len=20", "demo.text_len: 16 there, 20 now"),
                               ("demo.dvae_steps=4", "demo.dvae_steps: 2 there, 4 now")):
        with pytest.raises(UserError, match=rf"^{re.escape(str(out))} holds an earlier demo's runs \(runs/dvae, "
                                            rf"runs/clip, runs/dalle\) trained with other settings "
                                            rf"\({re.escape(differs)}\); rerun with that demo's settings to continue "
                                            rf"it, or give this one another output=$"):
            run_demo(out, capsys, override)
        assert data == data_mtimes(out), f"a demo refused for {override} wrote over the earlier demo's data"


def test_settings_only_runs_without_checkpoints_use_may_change_and_an_older_folder_is_held_to_its_data(tmp_path):
    """Without the settings record (a folder of a demo before it), the data stage's record still refuses other data;
    a setting only later stages use may change while they have no checkpoint, and is recorded then."""
    from megadalle.config import build
    from megadalle.config.demo import DemoConfig
    from megadalle.data import atomic
    from megadalle.demo_settings import check_and_record, settings_path

    def settings(*overrides: str) -> DemoConfig:
        return build(DemoConfig, compose("demo", [*TINY, *overrides]).demo, "demo")

    out = tmp_path / "demo"
    atomic.write_json(out / "made" / "data.json", demo.data_inputs(settings(), 0))
    (out / "runs" / "dvae" / "checkpoints" / "step_00000002").mkdir(parents=True)
    with pytest.raises(UserError, match=r"holds an earlier demo's runs \(runs/dvae\) trained with other settings "
                                        r"\(seed: 0 there, 1 now\);"):
        check_and_record(settings(), out, 1)
    check_and_record(settings("demo.text_len=20"), out, 0)
    assert not settings_path(out).exists(), "recorded settings the dVAE's checkpoint may not have been trained with"

    atomic.write_json(settings_path(out), {"seed": 0, "demo.text_len": 16, "demo.dvae_lr": settings().dvae_lr})
    check_and_record(settings("demo.text_len=20"), out, 0)
    assert json.loads(settings_path(out).read_text())["demo.text_len"] == 20
    with pytest.raises(UserError, match=r"\(demo.dvae_lr: 0.001 there, 0.002 now\)"):
        check_and_record(settings("demo.dvae_lr=0.002"), out, 0)


def test_the_dvaes_step_count_may_change_until_a_run_trained_on_the_dvae_has_checkpoints(tmp_path):
    """A new demo.dvae_steps retrained the dVAE beside a CLIP and a Transformer trained on the old one's
    reconstructions and codes (a finished Transformer was exported unchanged, mismatched with the new dVAE)."""
    from megadalle.config import build
    from megadalle.config.demo import DemoConfig
    from megadalle.demo_settings import check_and_record, settings_path

    def settings(*overrides: str) -> DemoConfig:
        return build(DemoConfig, compose("demo", [*TINY, *overrides]).demo, "demo")

    out = tmp_path / "demo"
    check_and_record(settings(), out, 0)
    (out / "runs" / "dvae" / "checkpoints" / "step_00000002").mkdir(parents=True)
    check_and_record(settings("demo.dvae_steps=4"), out, 0)  # the dVAE's run alone goes on to 4
    assert json.loads(settings_path(out).read_text())["demo.dvae_steps"] == 4
    (out / "runs" / "dalle" / "checkpoints" / "step_00000002").mkdir(parents=True)
    for overrides, differs in ((["demo.dvae_steps=2"], "demo.dvae_steps: 4 there, 2 now"),
                               (["demo.dvae_steps=4", "demo.dvae_lr=0.002"], "demo.dvae_lr: 0.001 there, 0.002 now")):
        with pytest.raises(UserError, match=rf"^{re.escape(str(out))} holds an earlier demo's runs \(runs/dvae, "
                                            rf"runs/dalle\) trained with other settings \({re.escape(differs)}\); "
                                            "rerun with that demo's settings to continue it, or give this one another "
                                            "output=$"):
            check_and_record(settings(*overrides), out, 0)
    shutil.rmtree(out / "runs" / "dvae")  # the dVAE to train again from its start: still not beside that Transformer
    with pytest.raises(UserError, match=r"\(runs/dalle\) trained with other settings \(demo.dvae_lr: "):
        check_and_record(settings("demo.dvae_steps=4", "demo.dvae_lr=0.002"), out, 0)


def test_a_settings_record_from_before_the_dvaes_step_count_holds_it_to_the_dvae_run_that_made_the_folder(tmp_path):
    """A record written before demo.dvae_steps was recorded let one new step count through beside a Transformer
    trained on the old dVAE, and recorded it: the step count the dVAE's run was trained to (its run.json) is the
    folder's."""
    from megadalle.config import build
    from megadalle.config.demo import DemoConfig
    from megadalle.data import atomic
    from megadalle.demo_settings import check_and_record, current, settings_path

    def settings(*overrides: str) -> DemoConfig:
        return build(DemoConfig, compose("demo", [*TINY, *overrides]).demo, "demo")

    out = tmp_path / "demo"
    older = {key: value for key, value in current(settings(), 0).items() if key != "demo.dvae_steps"}
    atomic.write_json(settings_path(out), older)
    for run in ("dvae", "dalle"):
        (out / "runs" / run / "checkpoints" / "step_00000002").mkdir(parents=True)
    atomic.write_json(out / "runs" / "dvae" / "run.json", {"config": {"trainer": {"steps": 2}}})
    with pytest.raises(UserError, match=r"\(runs/dvae, runs/dalle\) trained with other settings "
                                        r"\(demo.dvae_steps: 2 there, 4 now\);"):
        check_and_record(settings("demo.dvae_steps=4"), out, 0)
    assert json.loads(settings_path(out).read_text()) == older
    check_and_record(settings("demo.dvae_steps=2"), out, 0)
    assert json.loads(settings_path(out).read_text())["demo.dvae_steps"] == 2


def test_a_training_stage_stopped_by_term_names_it_in_the_stop_line(tmp_path, capsys, monkeypatch):
    """The trainer takes the stop signals over while it trains (its own flag), and the line said "stopped by a
    signal" where every other stop names SIGTERM or Ctrl-C."""
    from megadalle.train.signals import StopFlag

    def term_in_train(d, output, seed, timer):
        with timer.stage("train", tmp_path / "runs/dalle"):
            flag = StopFlag().install()  # the training stage's, as loop.train installs it
            os.kill(os.getpid(), signal.SIGTERM)
            flag.uninstall()
            demo.finished("train", False)

    monkeypatch.setattr(demo, "run_demo", term_in_train)
    assert demo.run(compose("demo", [f"output={tmp_path}"])) == STOPPED_EXIT
    assert last_line(capsys.readouterr().err) == ("megadalle demo: stopped by SIGTERM in its train stage; kept no "
                                                  "finished stage and no checkpoint of train yet; rerun the same "
                                                  "command to continue from there")


def stop_in_dvae_after_two_updates(monkeypatch) -> None:
    """A USR1 (Slurm's warning) to this process during the dVAE's second update, as the scheduler would send it."""
    from megadalle.train import loop

    update = loop.Trainer._update

    def signalled(self, runner):
        metrics = update(self, runner)
        if self.step == 1 and self.run_dir.name == "dvae":
            os.kill(os.getpid(), signal.SIGUSR1)
        return metrics

    monkeypatch.setattr(loop.Trainer, "_update", signalled)


def test_a_demo_stopped_in_a_training_stage_says_what_it_kept_and_the_rerun_resumes_there(tmp_path, capsys,
                                                                                          monkeypatch):
    out = tmp_path / "demo"
    with monkeypatch.context() as patched:
        stop_in_dvae_after_two_updates(patched)
        code, printed, err = run_demo(out, capsys, "demo.dvae_steps=4")
    assert code == STOPPED_EXIT, err[-3000:]
    assert last_line(err) == ("megadalle demo: stopped by SIGUSR1 in its train-dvae stage; kept finished stages: "
                              "data + prepare + tokenizer and train-dvae's checkpoint at step 2; rerun the same "
                              "command to continue from there")
    assert not (out / "dvae.safetensors").exists() and not (out / "tokens").exists()

    code, printed, err = run_demo(out, capsys, "demo.dvae_steps=4")
    assert code == 0, err[-3000:]
    assert f"resumed from {out}/runs/dvae/checkpoints/step_00000002 at step 2" in printed, printed[-3000:]
    assert re.findall(r"^step (\d+): loss=", printed, re.M)[:2] == ["2", "3"]  # the dVAE's last two, then on
    assert "[demo] data: kept from an earlier run" in printed


def signal_during(monkeypatch, module, name: str, sig: int) -> None:
    """`module.name` sends `sig` to this process once it has begun (in the middle of its stage)."""
    real = getattr(module, name)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), sig)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, signalled)


def test_ctrl_c_while_the_demo_prepares_its_shards_leaves_no_shards_and_the_rerun_makes_them(tmp_path, capsys,
                                                                                             monkeypatch):
    import megadalle.data.prepare as prepare_module

    out = tmp_path / "demo"
    real = prepare_module.convert_all

    def convert_then_ctrl_c(*args):
        for i, result in enumerate(real(*args)):
            if i == 5:
                os.kill(os.getpid(), signal.SIGINT)
            yield result

    with monkeypatch.context() as patched:
        patched.setattr(prepare_module, "convert_all", convert_then_ctrl_c)
        code, printed, err = run_demo(out, capsys)
    assert code == STOPPED_EXIT and "Traceback" not in err, err[-3000:]
    assert last_line(err) == ("megadalle demo: stopped by Ctrl-C in its data + prepare + tokenizer stage; kept no "
                              "finished stage; rerun the same command to continue from there")
    assert not (out / "shards" / "index.json").exists() and not (out / "made" / "data.json").exists()
    assert not list((out / "shards").glob("*.tar")), "a shard half-written or left for finished"

    code, printed, err = run_demo(out, capsys)
    assert code == 0, err[-3000:]
    assert "[demo] data: kept" not in printed and (out / "shards" / "index.json").is_file()


def test_a_stop_line_between_two_stages_says_so_and_names_the_stage_before(tmp_path):
    """Outside any stage (train_models' imports, the summary after the last) the line said "before its first stage"
    and listed the stages it had finished."""
    assert demo.stop_line(None, "SIGTERM", ["data + prepare + tokenizer", "train-dvae"], None) == (
        "megadalle demo: stopped by SIGTERM between stages, after train-dvae; kept finished stages: data + prepare + "
        "tokenizer, train-dvae; rerun the same command to continue from there")
    assert demo.stop_line(None, "Ctrl-C", [], None).startswith("megadalle demo: stopped by Ctrl-C before its first "
                                                               "stage; kept no finished stage;")


def test_term_between_the_data_stage_and_the_training_stages_says_where_it_stopped(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    with monkeypatch.context() as patched:
        signal_during(patched, demo, "train_models", signal.SIGTERM)
        code, printed, err = run_demo(out, capsys)
    assert code == STOPPED_EXIT, err[-3000:]
    assert last_line(err) == ("megadalle demo: stopped by SIGTERM between stages, after data + prepare + tokenizer; "
                              "kept finished stages: data + prepare + tokenizer; rerun the same command to continue "
                              "from there")


def test_a_second_ctrl_c_while_the_demo_reports_its_stop_never_says_nothing_was_written(tmp_path, capsys,
                                                                                      monkeypatch):
    """A Ctrl-C escaping the demo's run while it reported a training stage's stop (which had saved a checkpoint)
    made the CLI say "before it began; nothing was written"."""
    from megadalle import cli

    def stopped_in_dvae(d, output, seed, timer):
        with timer.stage("train-dvae", tmp_path / "runs/dvae"):
            demo.finished("train-dvae", False)

    monkeypatch.setattr(demo, "run_demo", stopped_in_dvae)
    signal_during(monkeypatch, demo, "stop_line", signal.SIGINT)
    assert cli.main(["demo", *TINY, f"output={tmp_path / 'demo'}"]) == STOPPED_EXIT
    assert last_line(capsys.readouterr().err) == ("megadalle demo: stopped by Ctrl-C while it ran; it keeps the stages "
                                                  "it finished; rerun the same command to continue from there")


def test_term_while_the_demo_evaluates_keeps_every_trained_stage_and_the_rerun_trains_nothing(tmp_path, capsys,
                                                                                               monkeypatch):
    out = tmp_path / "demo"
    with monkeypatch.context() as patched:
        signal_during(patched, demo, "generate_and_judge", signal.SIGTERM)
        code, printed, err = run_demo(out, capsys)
    assert code == STOPPED_EXIT, err[-3000:]
    assert last_line(err) == ("megadalle demo: stopped by SIGTERM in its generate + judge stage; kept finished "
                              "stages: data + prepare + tokenizer, train-dvae, encode, train-clip, train, dvae check; "
                              "rerun the same command to continue from there")
    assert not (out / "demo.json").exists()

    code, printed, err = run_demo(out, capsys)
    assert code == 0, err[-3000:]
    assert not UPDATE.findall(printed) and (out / "demo.json").is_file()


@pytest.mark.parametrize("sig, line", [
    (signal.SIGTERM, "megadalle demo: stopped by SIGTERM before its first stage; kept no finished stage; rerun the "
                     "same command to continue from there"),
    (signal.SIGINT, "megadalle demo: stopped by Ctrl-C before it")], ids=["TERM", "Ctrl-C"])
def test_a_stop_signal_during_the_demos_start_up_exits_75_with_one_line(tmp_path, sig, line):
    """TERM while the demo imported killed it (143, nothing said); Ctrl-C printed a traceback (130)."""
    out = tmp_path / "demo"
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen([sys.executable, "-m", "megadalle", "demo", *TINY, f"output={out}"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        signal_once_taken(proc, sig)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == STOPPED_EXIT, err[-3000:]
    assert last_line(err).startswith(line) and "Traceback" not in err, err[-3000:]
    assert not (out / "made").exists()
