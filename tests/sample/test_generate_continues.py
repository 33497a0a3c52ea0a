"""A stopped sweep of generate (or evaluate) continued by its same command: the jobs that finished are skipped, not
refused (nor drawn again), the stopped one continues; the output is held for the whole run; and the saved batches
continue whatever else lies beside the weights and however the same files are named."""
import json
import os
import subprocess
import sys

import pytest

import megadalle.bundle
from megadalle.cli import main
from megadalle.folder_lock import output_lock
from megadalle.sampling.resume import UNFINISHED
from tests.eval.evaluate_command import evaluate_args
from tests.sample.stopped_generate import args, results, stopped_after_one_batch
from tests.tiny_models import write_tiny_models


@pytest.fixture
def models(tmp_path):
    write_tiny_models(tmp_path / "m")
    (tmp_path / "m" / "captions.txt").write_text("a red circle\na blue square\n")
    return tmp_path / "m"


def no_model_read(monkeypatch):
    monkeypatch.setattr(megadalle.bundle, "open_models", lambda *a, **k: pytest.fail("a model was read"))


def test_a_stopped_sweep_rerun_skips_the_finished_jobs_and_continues_the_stopped_one(models, tmp_path, capsys,
                                                                                      monkeypatch):
    """Job 0 finished, job 1 stopped: the same command was refused at job 0 ("holds an earlier generate's
    results"), and overwrite=true drew job 0 again in full."""
    sweep = tmp_path / "sweep"
    assert main(["generate", *args(models, sweep / "0", n=9, batch_size=3)]) == 0
    stopped_after_one_batch(models, sweep / "1", capsys, monkeypatch)
    scores = sweep / "0" / "scores.json"
    before = scores.stat().st_mtime_ns
    with monkeypatch.context() as patch:
        no_model_read(patch)
        for more in ([], ["overwrite=true"]):
            assert main(["generate", *args(models, sweep / "0", *more, n=9, batch_size=3)]) == 0
            assert capsys.readouterr().out == f"[generate] output={sweep / '0'}: done already (same settings); skipped\n"
    assert scores.stat().st_mtime_ns == before
    assert main(["generate", *args(models, sweep / "1", n=9, batch_size=3)]) == 0
    assert "[generate] continuing: 3 of 9 samples" in capsys.readouterr().err
    assert main(["generate", *args(models, tmp_path / "whole", n=9, batch_size=3)]) == 0
    assert results(sweep / "1") == results(tmp_path / "whole")
    assert main(["generate", *args(models, sweep / "0", "keep=2", n=9, batch_size=3)]) == 2  # other results: refused
    assert "holds an earlier generate's results (scores.json) of other settings (keep=4 there, 2 here); give " \
           "another output" in capsys.readouterr().err


def test_an_evaluate_rerun_of_the_same_settings_is_skipped(models, tmp_path, capsys, monkeypatch):
    out = tmp_path / "eval"
    assert main(evaluate_args(models, "n=1", f"output={out}")) == 0
    before = (out / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    with monkeypatch.context() as patch:
        no_model_read(patch)
        assert main(evaluate_args(models, "n=1", f"output={out}")) == 0
    assert capsys.readouterr().out == f"[evaluate] output={out}: done already (same settings); skipped\n"
    assert (out / "metrics.json").stat().st_mtime_ns == before
    (models / "captions.txt").write_text("a red circle\n")  # other captions, same path: other results
    assert main(evaluate_args(models, "n=1", f"output={out}")) == 2
    assert "of other settings (captions=['a red circle', 'a blue square'] there, ['a red circle'] here)" in \
        capsys.readouterr().err


def test_finished_results_of_other_files_name_them(models, tmp_path, capsys):
    """A rerun after the model changed said only "holds an earlier generate's results (scores.json)", not which
    setting differs, unlike the unfinished one."""
    output = tmp_path / "out"
    assert main(["generate", *args(models, output, n=4, batch_size=2)]) == 0
    weights = models / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_mtime_ns + 10**9,) * 2)  # trained on and exported again
    capsys.readouterr()
    assert main(["generate", *args(models, output, "seed=3", n=4, batch_size=2)]) == 2
    assert capsys.readouterr().err == (
        f"megadalle generate: output={output}: holds an earlier generate's results (scores.json) of other settings "
        "(the files behind weights changed since (a newer checkpoint, another export); seed=0 there, 3 here); give "
        "another output, or overwrite=true to replace them\n")


def saved_by_an_older_version(patch, module):
    """`module`'s runs save their key as the version before JSON records were stated by content did."""
    real = module.sampling_key
    patch.setattr(module, "sampling_key", lambda *key: real(*key[:5], True))


def test_results_an_older_version_saved_continue_and_are_done_where_the_files_did_not_change(models, tmp_path, capsys,
                                                                                            monkeypatch):
    """The keys before JSON records were stated by content (and before a model folder's Transformer was named as the
    folder): the saved batches of a generate stopped before an upgrade, and the results it finished, keep."""
    from megadalle import evaluate, sample

    output, finished = tmp_path / "stopped", tmp_path / "finished"
    saved_by_an_older_version(monkeypatch, sample)
    stopped_after_one_batch(models, output, capsys, monkeypatch)  # and undoes the patch
    with monkeypatch.context() as patch:
        saved_by_an_older_version(patch, sample)
        saved_by_an_older_version(patch, evaluate)
        assert main(["generate", *args(models, finished, n=4, batch_size=2)]) == 0
        assert main(evaluate_args(models, "n=1", f"output={finished / 'eval'}")) == 0
    capsys.readouterr()
    assert main(["generate", *args(models, output, n=9, batch_size=3)]) == 0
    assert "[generate] continuing: 3 of 9 samples" in capsys.readouterr().err
    with monkeypatch.context() as patch:
        no_model_read(patch)
        assert main(["generate", *args(models, finished, n=4, batch_size=2)]) == 0
        assert main(evaluate_args(models, "n=1", f"output={finished / 'eval'}")) == 0
    assert capsys.readouterr().out.count("done already (same settings); skipped") == 2


def test_results_an_older_version_saved_are_refused_where_the_weights_changed_since(models, tmp_path, capsys,
                                                                                     monkeypatch):
    """The older key is accepted only where the files did not change: a model exported again after an upgrade
    still refuses the batches and the results saved before it, naming the weights alone (the newer key's form, of
    every JSON by content, was said: "the files behind clip_weights, dvae_weights, weights changed")."""
    from megadalle import sample

    output, finished = tmp_path / "stopped", tmp_path / "finished"
    saved_by_an_older_version(monkeypatch, sample)
    stopped_after_one_batch(models, output, capsys, monkeypatch)  # and undoes the patch
    with monkeypatch.context() as patch:
        saved_by_an_older_version(patch, sample)
        assert main(["generate", *args(models, finished, n=4, batch_size=2)]) == 0
    weights = models / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_mtime_ns + 10**9,) * 2)  # exported again
    capsys.readouterr()
    with monkeypatch.context() as patch:
        no_model_read(patch)
        assert main(["generate", *args(models, output, n=9, batch_size=3)]) == 2
        assert "holds 3 samples of an unfinished generate with other settings (the files behind weights changed " \
               "since (a newer checkpoint, another export)); give another output" in capsys.readouterr().err
        assert main(["generate", *args(models, finished, n=4, batch_size=2)]) == 2
        assert "holds an earlier generate's results (scores.json) of other settings (the files behind weights " \
               "changed since (a newer checkpoint, another export)); give another output" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["generate", "evaluate"])
def test_an_output_another_process_writes_is_refused_naming_it(models, tmp_path, capsys, verb):
    """Two runs into one folder both said "wrote", one's results silently replaced by the other's."""
    out = tmp_path / "busy"
    command = ["generate", *args(models, out)] if verb == "generate" else evaluate_args(models, f"output={out}")
    with output_lock(out, verb):
        assert main(command) == 2
    err = capsys.readouterr().err
    assert f"output={out} is in use by a{'n' * (verb == 'evaluate')} {verb} (host" in err, err
    assert f"pid {os.getpid()}" in err, err
    assert not (out / "scores.json").exists() and not (out / "metrics.json").exists()


def test_files_beside_the_weights_that_the_loader_does_not_read_do_not_block_continuing(models, tmp_path, capsys,
                                                                                         monkeypatch):
    """A user's progress.json beside model.safetensors, another generate's results in the model's folder: "the
    files behind weights changed since"."""
    output = tmp_path / "out"
    stopped_after_one_batch(models, output, capsys, monkeypatch)
    (models / "progress.json").write_text("{}")
    assert main(["generate", *args(models, models / "samples" / "b", n=4, batch_size=2)]) == 0
    assert main(["generate", *args(models, output, n=9, batch_size=3)]) == 0
    assert "[generate] continuing: 3 of 9 samples" in capsys.readouterr().err


def test_the_same_files_named_another_way_continue(models, tmp_path, capsys, monkeypatch):
    """weights=./m/model.safetensors after weights=/abs/m/model.safetensors, or the tokenizer given as its default,
    were "other settings"."""
    output = tmp_path / "out"
    stopped_after_one_batch(models, output, capsys, monkeypatch)
    monkeypatch.chdir(tmp_path)
    command = ["generate", *args(models, output, f"tokenizer={models / 'tokenizer.model'}", n=9, batch_size=3)]
    command[1] = "weights=./m/model.safetensors"
    assert main(command) == 0
    assert "[generate] continuing: 3 of 9 samples" in capsys.readouterr().err
    assert not (output / UNFINISHED).exists()
    assert json.loads((output / "scores.json").read_text())["config"]["weights"] == "./m/model.safetensors"


def test_a_sweeps_prompt_the_tokenizer_reads_nothing_of_stops_it_before_any_job(models, tmp_path, capsys, monkeypatch):
    """Job 0 drew, then job 1's prompt was refused by generate itself: the sweep's check of every job before the
    first runs did not read the prompts with the tokenizer."""
    no_model_read(monkeypatch)
    assert main(["generate", "-m", f"weights={models / 'model.safetensors'}", 'prompt="a red circle","\ufffd","a cat"',
                 "n=1", f"output={tmp_path / 'sweep'}"]) == 2
    assert "the tokenizer reads nothing of it (it drops '\ufffd' U+FFFD); give words; no job has run" in \
        capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


def test_a_sweeps_prompt_hydra_reads_as_no_text_stops_it_before_any_job(models, tmp_path, capsys, monkeypatch):
    no_model_read(monkeypatch)
    assert main(["generate", "-m", f"weights={models / 'model.safetensors'}", 'prompt="a red circle",null',
                 "n=1", f"output={tmp_path / 'sweep'}"]) == 2
    assert "prompt=null: expected one prompt (text)" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


def test_sample_files_of_a_run_killed_while_writing_them_go_with_the_next_run(models, tmp_path, capsys):
    """kill -9 between the PNGs and scores.json left sample files no record listed: a rerun with a smaller keep
    (or overwrite=true with another prompt) left them beside its own, and a glob of sample_*.png mixed two runs."""
    output = tmp_path / "kw"
    killed = ("import os, sys\nimport megadalle.outputs, megadalle.sample as s\nreal = megadalle.outputs.write_record\n"
              "s.write_record = lambda path, record: os._exit(137) if path.name == 'scores.json' else real(path, record)\n"
              "from megadalle.cli import main\nmain(sys.argv[1:])\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", killed, "generate", *args(models, output, "keep=6", n=6, batch_size=3)],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 137 and (output / "sample_05.png").is_file(), proc.stderr[-2000:]
    assert main(["generate", *args(models, output, "keep=3", n=6, batch_size=3)]) == 0
    assert sorted(p.name for p in output.glob("sample_*.png")) == ["sample_00.png", "sample_01.png", "sample_02.png"]
    assert not (output / ".writing.json").exists()


def test_generate_and_evaluate_find_their_files_once(models, tmp_path, monkeypatch):
    """A run found the files behind its keys twice, for its resume key and again to open them: once now, so the
    key states the files that are read."""
    import megadalle.bundle as bundle
    import megadalle.sampling.files as files
    from megadalle import evaluate, sample
    from megadalle.config.compose import compose

    real, searches = files.sampling_files, []  # the search of the files, wherever it is called from
    for module in (files, sample, evaluate, bundle):
        monkeypatch.setattr(module, "sampling_files", lambda *a, **k: searches.append(a[0]) or real(*a, **k))
    assert sample.run(compose("generate", args(models, tmp_path / "generate", n=4, batch_size=4))) == 0
    assert len(searches) == 1
    assert evaluate.run(compose("evaluate", evaluate_args(models, "n=1", f"output={tmp_path / 'evaluate'}")[1:])) == 0
    assert len(searches) == 2
