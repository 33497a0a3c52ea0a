"""The checks of the verbs that read a trained run or its weights (export, generate, evaluate, import-dvae): the run
or the weights are there, named by their key, before a model is built around them."""
from __future__ import annotations

from omegaconf import DictConfig

from megadalle.preflight.probes import exists, export_target, writable


def check_export(cfg: DictConfig) -> None:
    """The run, and a model folder's place (exported weights alone are checked by the export, weights/replace.py)."""
    from megadalle.weights import one_file

    exists("run", cfg.run, "directory")
    if not cfg.weights_only and not one_file(cfg.output):
        writable("output", cfg.output, "folder")


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
