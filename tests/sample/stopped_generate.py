"""A `generate` stopped after its first saved batch, its command line over a tiny model folder, and what a finished
one wrote: the pieces of every test that a stopped generate continues, or refuses to, as it should.

A helper, not a test module: generate's stop tests, its continued sweeps, the weights it reads and a rerun run's
generate all stop one alike, and none of those test modules should be another's library.
"""
import json

from megadalle.cli import main


def args(models, output, *more, n=20, batch_size=5):
    return [f"weights={models / 'model.safetensors'}", "prompt=a red circle", f"n={n}", f"batch_size={batch_size}",
            "keep=4", f"output={output}", *more]


def results(folder):
    """What a finished generate wrote: scores.json's samples and scores, and the kept images' bytes."""
    record = json.loads((folder / "scores.json").read_text())
    return record["kept"], record["all_scores"], [(folder / k["file"]).read_bytes() for k in record["kept"]]


def stopped_after_one_batch(models, output, capsys, monkeypatch, command: list[str] | None = None) -> None:
    """A generate of 9 samples in batches of 3 into `output` (or the generate `command`), Ctrl-C'd once its first
    batch is saved."""
    from megadalle.sampling import resume

    def interrupt(self, codes, scores):
        real(self, codes, scores)
        raise KeyboardInterrupt

    real = resume.SavedBatches.add
    monkeypatch.setattr(resume.SavedBatches, "add", interrupt)
    assert main(command or ["generate", *args(models, output, n=9, batch_size=3)]) == 130
    monkeypatch.undo()
    capsys.readouterr()
