"""`megadalle generate` stopped by a scheduler's signal (TERM) or Ctrl-C: one line, nothing left empty, and the
finished batches saved, so that the same command continues and ends with an uninterrupted run's samples."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from megadalle.cli import main
from megadalle.sampling.resume import UNFINISHED
from megadalle.train.signals import STOPPED_EXIT
from tests.sample.stopped_generate import args, results, stopped_after_one_batch
from tests.tiny_models import write_tiny_models


SLOW_GENERATE = textwrap.dedent("""
    import sys, time
    from megadalle.cli import main
    from megadalle.sampling import resume

    real = resume.SavedBatches.add

    def slow(self, codes, scores):
        real(self, codes, scores)
        time.sleep(2)  # the test's TERM lands before the next batch, however loaded the machine

    resume.SavedBatches.add = slow
    sys.exit(main(["generate", *sys.argv[1:]]))
""")
"""`megadalle generate` with each saved batch followed by 2 s: the whole tiny run took ~50 ms from its first saved
batch to its end, within which the test had to notice the file and signal."""


@pytest.fixture
def models(tmp_path):
    write_tiny_models(tmp_path)
    return tmp_path


def test_term_mid_sampling_saves_the_finished_batches_and_the_same_command_continues(models, tmp_path, capsys):
    """TERM (scancel, a time limit, `timeout`, `docker stop`) killed generate where it stood: exit 143, nothing
    printed, the output folder left empty and every sample drawn lost."""
    output = tmp_path / "term" / "deep"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_GENERATE, *args(models, output)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (output / UNFINISHED).is_file():  # a batch is saved: sampling has begun
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    last = err.splitlines()[-1]  # on a line of its own, after the progress bar's
    assert proc.returncode == STOPPED_EXIT, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    saved = int(last.split("; ")[1].split()[0])
    assert last == (f"megadalle generate: stopped by SIGTERM; {saved} of 20 samples are saved in "
                    f"{output / UNFINISHED}; the same command continues"), last
    assert 0 < saved < 20 and saved % 5 == 0 and not (output / "scores.json").exists()

    assert main(["generate", *args(models, output)]) == 0
    assert f"[generate] continuing: {saved} of 20 samples" in capsys.readouterr().err
    assert not (output / UNFINISHED).exists()
    assert main(["generate", *args(models, tmp_path / "whole")]) == 0
    assert results(output) == results(tmp_path / "whole")


def test_a_stop_before_any_batch_leaves_no_folder_and_the_signals_as_they_were(models, tmp_path, capsys,
                                                                                monkeypatch):
    """A stop while the models load (minutes for a 12B) saved nothing: the folders the run made go again."""
    import megadalle.sample

    def stopped_while_loading(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here
        raise AssertionError("TERM did not stop generate")

    monkeypatch.setattr(megadalle.sample, "generate", stopped_while_loading)
    before = signal.getsignal(signal.SIGTERM)
    output = tmp_path / "new" / "out"
    assert main(["generate", *args(models, output)]) == STOPPED_EXIT
    assert capsys.readouterr().err == (f"megadalle generate: stopped by SIGTERM; no scores.json of this run in {output}"
                                       "; rerun the same command\n")
    assert not (tmp_path / "new").exists()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_stop_held_since_the_commands_start_stops_generate_before_it_reads_a_model(models, tmp_path, capsys,
                                                                                   monkeypatch):
    """A verb that takes the stop signals at its command's start (signals.taken_at_start, as the training verbs
    do) holds a TERM that came meanwhile: generate stops on it at once, as if it had come after its own start, and
    names it."""
    import megadalle.bundle
    from megadalle.train.signals import taken_at_start

    monkeypatch.setattr(megadalle.bundle, "read_model", lambda *a, **k: pytest.fail("a model was read"))
    output = tmp_path / "out"
    with taken_at_start():
        os.kill(os.getpid(), signal.SIGTERM)
        assert main(["generate", *args(models, output)]) == STOPPED_EXIT
    assert capsys.readouterr().err == (f"megadalle generate: stopped by SIGTERM; no scores.json of this run in "
                                       f"{output}; rerun the same command\n")
    assert not output.exists()


@pytest.mark.parametrize("verb", ["generate", "evaluate"])
def test_a_term_during_the_commands_start_up_exits_75_not_143(models, tmp_path, verb):
    """TERM in a sampling verb's first seconds (imports, composing, preflight) killed it with 143 and nothing
    said; a scheduler requeues on 75 only. The TERM comes here while preflight runs, in a process of its own."""
    output = tmp_path / "out"
    argv = [verb, *args(models, output)] if verb == "generate" else \
        [verb, f"weights={models / 'model.safetensors'}", f"captions={tmp_path / 'captions.txt'}", "n=2",
         "fid=false", f"output={output}"]
    (tmp_path / "captions.txt").write_text("a red circle\n")
    code = ("import os, signal, sys, megadalle.preflight as p\n"
            "checks = p.preflight\n"
            "p.preflight = lambda *a: (os.kill(os.getpid(), signal.SIGTERM), checks(*a))[1]\n"
            "from megadalle.cli import main\n"
            f"sys.exit(main({argv!r}))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == STOPPED_EXIT, proc.stderr[-3000:]
    assert proc.stderr.splitlines()[-1].startswith(f"megadalle {verb}: stopped by SIGTERM"), proc.stderr[-3000:]
    assert not output.exists()


def test_ctrl_c_keeps_the_finished_batches_too(models, tmp_path, capsys, monkeypatch):
    from megadalle.sampling import resume

    real, added = resume.SavedBatches.add, []

    def interrupt_after_two(self, codes, scores):
        real(self, codes, scores)
        added.append(len(codes))
        if len(added) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(resume.SavedBatches, "add", interrupt_after_two)
    output = tmp_path / "out"
    assert main(["generate", *args(models, output, n=9, batch_size=3)]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"megadalle generate: interrupted; 6 of 9 samples are saved in {output / UNFINISHED}; the same command "
        "continues")
    monkeypatch.undo()
    assert main(["generate", *args(models, output, n=9, batch_size=3)]) == 0
    assert main(["generate", *args(models, tmp_path / "whole", n=9, batch_size=3)]) == 0
    assert results(output) == results(tmp_path / "whole")


def test_saved_batches_of_other_settings_are_refused_unless_overwrite(models, tmp_path, capsys, monkeypatch):
    """Continuing with another seed (or prompt, n, batch_size, files...) would mix two runs' samples."""
    output = tmp_path / "out"
    stopped_after_one_batch(models, output, capsys, monkeypatch)
    assert main(["generate", *args(models, output, "seed=1", n=9, batch_size=3)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"megadalle generate: output={output}: holds 3 samples of an unfinished generate with other settings "
        "(seed=0 there, 1 here); rerun that command to finish it, give another output, or overwrite=true to discard "
        "them")
    assert main(["generate", *args(models, output, "seed=1", "overwrite=true", n=9, batch_size=3)]) == 0
    assert main(["generate", *args(models, tmp_path / "whole", "seed=1", n=9, batch_size=3)]) == 0
    assert results(output) == results(tmp_path / "whole")


@pytest.mark.parametrize("changed, key", [("model.safetensors", "weights"), ("dvae.safetensors", "dvae_weights")])
def test_saved_batches_of_weights_changed_since_are_refused(models, tmp_path, capsys, monkeypatch, changed, key):
    """The same command over a path that holds other weights now (a model exported again, a run directory with a
    newer checkpoint; here the dVAE beside the model, the default of `dvae_weights`) would mix two models' samples."""
    output = tmp_path / "out"
    stopped_after_one_batch(models, output, capsys, monkeypatch)
    stat = (models / changed).stat()
    os.utime(models / changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert main(["generate", *args(models, output, n=9, batch_size=3)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"megadalle generate: output={output}: holds 3 samples of an unfinished generate with other settings "
        f"(the files behind {key} changed since (a newer checkpoint, another export)); give another output, or "
        "overwrite=true to discard them")  # not "rerun that command": it was rerun, and would be refused again


def test_an_unreadable_saved_file_is_refused_unless_overwrite(models, tmp_path, capsys):
    """A file of the saved batches that is no safetensors (cut short by a full disk outside megadalle's atomic
    write, or someone's file of that name) is named, not a traceback, and never silently replaced."""
    output = tmp_path / "out"
    output.mkdir()
    (output / UNFINISHED).write_bytes(b"not safetensors")
    assert main(["generate", *args(models, output, n=4, batch_size=2)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"megadalle generate: output={output}: {UNFINISHED} cannot be read (") and \
        err.endswith("); remove it, or overwrite=true to start again\n") and err.count("\n") == 1, err
    assert (output / UNFINISHED).read_bytes() == b"not safetensors"
    assert main(["generate", *args(models, output, "overwrite=true", n=4, batch_size=2)]) == 0
    assert not (output / UNFINISHED).exists() and (output / "scores.json").is_file()
