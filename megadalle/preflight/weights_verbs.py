"""The checks of the verbs that read a trained run or its weights (export, generate, evaluate, import-dvae): the run
or the weights are there, named by their key, before a model is built around them."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from megadalle.preflight.probes import PreflightError, exists, export_target, writable


def check_export(cfg: DictConfig) -> None:
    """The run, and a model folder's place (exported weights alone are checked by the export, weights/replace.py)."""
    from megadalle.weights import one_file

    check_run(cfg.run)
    if not cfg.weights_only and not one_file(cfg.output):
        writable("output", cfg.output, "folder")


def check_run(value) -> None:
    """`run` is a training run directory whose run.json reads (run_pieces.read), checked before export rebuilds the
    run's task from it: anything else was a FileNotFoundError or JSONDecodeError traceback there. What is given
    instead is most often what lies beside a run (a model folder, a checkpoint, the folder of runs): it is named,
    with the `run=` to give (`_instead_of_run`)."""
    from megadalle import run_pieces

    path = Path(str(value))
    instead = _instead_of_run(path) if path.exists() else None
    if instead:
        raise PreflightError(f"run={value}: {instead}")
    exists("run", value, "directory")
    run_pieces.read(path)


def _instead_of_run(path: Path) -> str | None:
    """What `path`, no training run, is, and what to give as `run` instead; None where nothing better than "not a
    training run directory" can be said."""
    from megadalle.config.override import override_word
    from megadalle.sampling.files import unfinished
    from megadalle.sampling.load import checkpoint_in_run, is_run
    from megadalle.weights import first_of, model_folder_around

    in_run = checkpoint_in_run(path)
    if in_run is not None:
        run, step = in_run
        if step is None:
            return f"the checkpoints folder of the training run {run}; give {override_word('run', run)}"
        part = "a file of the checkpoint" if path.is_file() else "the checkpoint"
        return (f"{part} {step.name} of the training run {run}, not the run; give {override_word('run', run)} "
                f"{override_word('checkpoint', step)} (run= alone exports its newest checkpoint)")
    folder = model_folder_around(path) or (path if unfinished(path) else None)
    if folder is not None:
        what = "a model folder" if folder == path.absolute() else f"inside the model folder {folder}"
        return f"{what}, which an export wrote, not a training run; give the run it was exported from{_source(folder)}"
    if path.is_file():
        parent = path.parent
        return "a file, not a training run directory; give " + (
            f"its run: {override_word('run', parent)}" if is_run(parent) else "the directory holding run.json")
    runs = sorted(child for child in path.iterdir() if is_run(child)) if not is_run(path) else []
    if runs:
        return (f"a folder of training runs ({first_of([run.name for run in runs])}), not a run; give one of them: "
                f"{override_word('run', runs[0])}")
    return None


def _source(folder: Path) -> str:
    """The training run the model folder `folder` was exported from, as its bundle.json records it
    (`sampling.files.recorded_run`), for the way out: `: run=RUN`; the folder holding run.json where it records none
    that is a run (unfinished, garbled, a relative record of an older export, a run moved since)."""
    from megadalle.config.override import override_word
    from megadalle.sampling.files import recorded_run

    run = recorded_run(folder)
    return f": {override_word('run', run)}" if run else " (the directory holding run.json)"


def check_generate(cfg: DictConfig) -> None:
    """The weights, and the prompt read by the tokenizer generate will use (found as it finds it, from the keys and
    records alone: sampling.files.sampling_files), so that a sweep's prompt the tokenizer reads nothing of stops the
    sweep before its first job draws, not after the jobs before it. Each run finds the files again: this check runs
    before the verb (for a sweep, for every job before any job runs) and without the CLIP, so what it finds is not
    what a run reads."""
    from megadalle.config.sample import check_prompt_node
    from megadalle.data.tokenizer import Tokenizer, TokenizerError
    from megadalle.sampling.files import sampling_files
    from megadalle.sampling.prompt import check_prompt

    exists("weights", cfg.weights)
    check_prompt_node(cfg.get("prompt"))  # null, or a list: no text
    if isinstance(cfg.get("prompt"), str):
        files = sampling_files(cfg.weights, cfg.get("dvae_weights"), cfg.get("tokenizer"), want_clip=False)
        try:
            words = Tokenizer(files.tokenizer)
        except TokenizerError:  # a file that is no tokenizer: generate's check of the files names it, with its key
            return
        check_prompt(words, cfg.prompt)


def check_evaluate(cfg: DictConfig) -> None:
    """The Transformer's `weights`, named as `generate` names them: a missing path is not the dVAE missing
    beside it. The captions, shards and output are checked by `evaluate` itself (before any model is read),
    so that a call without the CLI gets the same checks."""
    exists("weights", cfg.weights)


def check_import_dvae(cfg: DictConfig) -> None:
    """OpenAI's two files are there, and `output` replaces at most an earlier dVAE's weights: save_weights replaced
    any file there (another model's weights, a user's JSON beside) in silence."""
    exists("encoder", cfg.encoder, "file")
    exists("decoder", cfg.decoder, "file")
    export_target(cfg.output, "dvae", key="output")
