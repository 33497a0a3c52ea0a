"""`generate weights=RUN_DIR` after the run's `train` was run again with nothing left to do (a Slurm requeue, a demo
rerun), which writes run.json anew with the same bytes: the generate continues, or is done, as before."""
import os

from megadalle.cli import main
from megadalle.sampling.resume import UNFINISHED
from tests.sample.stopped_generate import stopped_after_one_batch


def test_a_run_json_rewritten_with_the_same_bytes_keeps_generates_results(trained, tmp_path, capsys, monkeypatch):
    """The key held run.json's modification time: "holds 3 samples of an unfinished generate with other settings (the
    files behind weights changed since ...)", and a finished one "holds an earlier generate's results"."""
    run, _, dvae, _ = trained
    output = tmp_path / "out"
    command = ["generate", f"weights={run}", f"dvae_weights={dvae}", "prompt=red cat", "n=9", "batch_size=3",
               "keep=2", "rerank=false", f"output={output}"]
    stopped_after_one_batch(None, output, capsys, monkeypatch, command)
    assert (output / UNFINISHED).is_file()

    def train_again():
        record = run / "run.json"
        record.write_bytes(record.read_bytes())
        later = record.stat().st_mtime_ns + 10**9
        os.utime(record, ns=(later, later))

    train_again()
    assert main(command) == 0, capsys.readouterr().err
    assert "[generate] continuing: 3 of 9 samples" in capsys.readouterr().err
    train_again()
    assert main(command) == 0, capsys.readouterr().err
    assert capsys.readouterr().out == f"[generate] output={output}: done already (same settings); skipped\n"
