"""`megadalle <verb> key=value ...`: one entry point, one verb per pipeline stage.

Each verb is a hydra app: its primary config is `conf/<verb>.yaml`, composed with the command
line's overrides. The CLI only parses, checks (megadalle.preflight) and hands the composed config to
the stage's function; the stages never read the command line themselves, so `demo` and the tests
call them directly. A command line with hydra flags (`-m` sweeps, launchers, `--cfg`) goes through
hydra's own runner instead (megadalle.hydra_app), whose jobs run the same checks and stage.
"""
from __future__ import annotations

import difflib
import importlib
import re
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from itertools import takewhile
from typing import Iterator, NoReturn

LOCAL_RANK_FLAG = re.compile(r"^--local[_-]rank(=\d+)?$")
"""Added by `deepspeed` without `--no_local_rank`, before the verb (`deepspeed --module megadalle train`); ranks
come from the environment, so `main` drops it first: hydra would reject it, and read as the verb it kept a training
verb from holding its stop signals at start."""

USAGE = "usage: megadalle <verb> [key=value ...]   (megadalle <verb> --help shows the verb's config)"


@dataclass(frozen=True)
class Verb:
    target: str
    """`module:function` taking the composed DictConfig."""
    summary: str
    positional: str | None = None
    """The key a bare first argument sets (`megadalle index DIR` is `megadalle index dir=DIR`)."""
    holds_stop_signals: bool = False
    """It holds the scheduler's stop signals from the command's first line (`stop_signals`): the training verbs and
    the sampling verbs, which end with STOPPED_EXIT on them (what launch/slurm requeues on)."""
    stops_on_ctrl_c: bool = False
    """Ctrl-C before its stage begins (while the command imports and composes, `main`) or escaping it once begun
    (`run_stage`) ends it with one line and STOPPED_EXIT instead of a traceback and 130: the demo, which people stop
    by hand and rerun to continue."""


VERBS: dict[str, Verb] = {
    "prepare": Verb("megadalle.data.prepare:run", "images + captions -> webdataset shards (bad files skipped and reported)"),
    "index": Verb("megadalle.data.ingest:run", "index webdataset tars written elsewhere (img2dataset...), checking every sample",
                   positional="dir"),
    "tokenizer": Verb("megadalle.data.tokenizer:run", "train the sentencepiece BPE tokenizer on the shards' captions"),
    "train-dvae": Verb("megadalle.train.dvae:run", "train the discrete VAE (stage 1) on image shards", holds_stop_signals=True),
    "import-dvae": Verb("megadalle.models.import_dalle:run", "OpenAI's released dVAE (dall_e encoder.pkl/decoder.pkl) -> dVAE weights"),
    "encode": Verb("megadalle.encode:run", "image shards -> token shards (dVAE codes + captions)"),
    "train-clip": Verb("megadalle.train.clip:run", "train the CLIP reranker on image shards", holds_stop_signals=True),
    "train": Verb("megadalle.train.transformer:run", "train the Transformer (stage 2) with DeepSpeed ZeRO or pipeline", holds_stop_signals=True),
    "export": Verb("megadalle.export:run", "a training run -> a model folder for generate (or its weights alone)"),
    "generate": Verb("megadalle.sample:run", "sample images for a prompt, decode, rerank with CLIP, write a grid",
                     holds_stop_signals=True),
    "evaluate": Verb("megadalle.evaluate:run", "CLIP score, FID and KID of a model's samples; JSON + Markdown",
                     holds_stop_signals=True),
    "plan": Verb("megadalle.plan.report:run", "parameters, FLOPs, memory per GPU and a parallel layout for a model size"),
    "demo": Verb("megadalle.demo:run", "the whole pipeline on a small generated data set, on CPU", holds_stop_signals=True,
                 stops_on_ctrl_c=True),
}

def load(target: str):
    """The object a `module:name` string names."""
    module_name, name = target.split(":")
    return getattr(importlib.import_module(module_name), name)


def resolve(verb: str):
    """The stage function behind a verb."""
    return load(VERBS[verb].target)


def stop_signals(verb: str, to_exit: bool = False):
    """For a training or sampling verb, its stop signals held until its run takes them over
    (signals.taken_at_start): a preemption during the minutes before the first update or sample (imports, indexing,
    building the engine, loading a 12B checkpoint) then stops it with STOPPED_EXIT, which the batch script requeues,
    instead of killing it (143, nothing said). Another verb stops where the signal lands (interrupted.py), with one
    line and STOPPED_EXIT (`main`). With `to_exit` (the process's command: `entry`) a run's late stop signals stay
    ignored to the exit (signals.ignore_late_copies)."""
    if verb not in VERBS:
        return nullcontext()
    if not VERBS[verb].holds_stop_signals:
        from megadalle.interrupted import stops_at_once

        return stops_at_once()
    from megadalle.train.signals import taken_at_start

    return taken_at_start(to_exit)


def main(argv: list[str] | None = None, to_exit: bool = False) -> int:
    """`megadalle ARGV`; returns the exit code. A reader that closes the pipe early (`--help | head`)
    ends the command quietly, as it ends other command-line tools. A training verb takes its stop signals here,
    first (`stop_signals`: this module imports hydra and the rest only when it needs them); the demo its Ctrl-C
    too (`Verb.stops_on_ctrl_c`: its run catches its own, this one came before it). Another verb's Ctrl-C that
    its stage did not report (`index`, `encode`, a start-up) ends it with one line and 130, the shell's status for
    it, as prepare and generate end theirs: a KeyboardInterrupt traceback read as a crash. A data verb's TERM or
    USR1 (interrupted.py) ends it with one line and STOPPED_EXIT. `to_exit`: the command is the process's (`entry`),
    which exits when it returns."""
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if not LOCAL_RANK_FLAG.match(a)]  # before the verb too
    verb = argv[0] if argv else ""
    try:
        with stop_signals(verb, to_exit):
            return run_command(argv)
    except KeyboardInterrupt as interrupted:
        if verb not in VERBS:
            raise
        if not VERBS[verb].stops_on_ctrl_c:  # a verb that did not say what stopped it (index, encode...)
            from megadalle.interrupted import by_ctrl_c, how, stop_status

            rerun = "" if by_ctrl_c(interrupted) else "; rerun the same command to finish it"
            print(f"megadalle {verb}: {how(interrupted)}{rerun}", file=sys.stderr, flush=True)
            return stop_status(interrupted)
        from megadalle.train.signals import STOPPED_EXIT

        print(f"megadalle {verb}: stopped by Ctrl-C before it began; nothing was written; rerun the same command "
              "to start it", file=sys.stderr, flush=True)
        return STOPPED_EXIT
    except BrokenPipeError:
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0


def run_command(argv: list[str]) -> int:
    from megadalle.cli_help import print_help, print_verb_help, version

    if argv[:1] == ["--version"]:
        print(f"megadalle {version()}")
        return 0
    if argv[:1] in (["-h"], ["--help"], ["help"]) and len(argv) > 1 and argv[1] in VERBS:
        argv = [argv[1], "--help", *argv[2:]]  # `megadalle help train`, as `git help commit`
    if not argv or argv[0] in ("-h", "--help", "help"):
        print_help(VERBS, USAGE)
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        near = difflib.get_close_matches(verb, VERBS, n=1)
        print(f"megadalle: unknown verb {verb!r}{f'; did you mean {near[0]}?' if near else '.'}\n", file=sys.stderr)
        print_help(VERBS, USAGE)
        return 2
    key = VERBS[verb].positional
    if key and rest and "=" not in rest[0] and not rest[0].startswith("-"):
        rest = [f"{key}={rest[0]}", *rest[1:]]
    if "-h" in rest or "--help" in rest:
        try:
            print_verb_help(verb, VERBS[verb].summary, [a for a in rest if a not in ("-h", "--help")])
        except compose_errors() as err:
            return fail(verb, bad_config(err))
        return 0

    if any(a.startswith("-") for a in rest):
        from megadalle.hydra_app import run_with_hydra

        return run_with_hydra(verb, rest)
    from megadalle.config.compose import compose

    try:
        cfg = compose(verb, rest)
    except compose_errors() as err:
        return fail(verb, bad_config(err))
    return execute(verb, cfg)


def compose_errors() -> tuple[type[Exception], ...]:
    """What a command line can make composing raise, each reported as one line (never a traceback): hydra's
    errors, OmegaConf's, ours, and the ValueError hydra raises for an override it cannot apply."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from megadalle.errors import UserError

    return HydraException, OmegaConfBaseException, UserError, ValueError


def execute(verb: str, cfg) -> int:
    """Check the composed config (megadalle.preflight), then run the verb's stage; user errors are one
    line and exit code 2. Shared by plain runs and hydra's sweeps and launchers (megadalle.hydra_app), whose
    jobs take their stop signals here (`stop_signals`), a launcher's job in a process of its own."""
    from hydra.errors import HydraException
    from omegaconf.errors import InterpolationResolutionError

    from megadalle.errors import StoppedBySignal, UserError
    from megadalle.preflight import preflight

    try:
        with stop_signals(verb):
            preflight(verb, cfg)
            result = run_stage(verb, cfg)
    except (HydraException, UserError) as err:
        return fail(verb, bad_config(err))
    except StoppedBySignal as err:
        from megadalle.train.signals import STOPPED_EXIT

        print(f"megadalle {verb}: {err}", file=sys.stderr, flush=True)
        return STOPPED_EXIT
    except InterpolationResolutionError as err:
        return fail(verb, bad_interpolation(err))
    except Exception:
        note_crash()
        raise
    return result if isinstance(result, int) else 0


def note_crash() -> None:
    """Tell a started process group that this rank's run crashed (distributed.crashed), so that its exit does not
    wait long for peers that may be waiting in a collective it will never join; a sweep job in a launcher's process
    (hydra_app.VerbJob) leaves through Python's exit, not `entry`, and meets them there."""
    if "megadalle.train.distributed" in sys.modules:
        from megadalle.train.distributed import crashed

        crashed()


def run_stage(verb: str, cfg):
    """The verb's stage on `cfg`. A Ctrl-C (or the demo's TERM or USR1) that escapes a stage that stops on its own
    (`Verb.stops_on_ctrl_c`: the demo, which reports its own stops) came once it had begun, a second one while it
    reported the first's: one line that is true whatever the stage wrote by then, not `main`'s "before it began;
    nothing was written", which printed after a stopped training stage had saved."""
    try:
        return resolve(verb)(cfg)
    except KeyboardInterrupt as interrupted:
        if not VERBS[verb].stops_on_ctrl_c:
            raise
        from megadalle.interrupted import named
        from megadalle.train.signals import STOPPED_EXIT

        print(f"megadalle {verb}: stopped by {named(interrupted)} while it ran; it keeps the stages it finished; "
              "rerun the same command to continue from there", file=sys.stderr, flush=True)
        return STOPPED_EXIT


def bad_config(err: Exception) -> str:
    """One line for a config error: hydra's first line and its cause's (OmegaConf adds full_key lines), each with
    the lines of hydra's that say what to do (`hydra_fix`)."""
    from hydra.errors import HydraException

    first = hydra_fix(str(err)) or type(err).__name__
    if not isinstance(err, HydraException):
        return first
    cause = hydra_fix(str(err.__cause__)) if err.__cause__ else ""
    return f"bad config: {first}" + (f" ({cause})" if cause else "")


FIX_LINES = ("To append to your config use", "Available options in")
"""Hydra's lines that say what to type instead (`+key=value`, a group's options): cut with the rest after its
first line, the one line said what was wrong and not what to do."""


def hydra_fix(text: str) -> str:
    """`text`'s first line (the next too where it ends with `:`, as "In 'exp3': ConfigKeyError raised while
    composing config:" does before the key it means), and its FIX_LINES, a list of options on one line."""
    lines = text.strip().splitlines()
    if not lines:
        return ""
    kept = lines[:2] if lines[0].rstrip().endswith(":") and len(lines) > 1 else lines[:1]
    for at, line in enumerate(lines[len(kept):], len(kept)):
        if line.startswith(FIX_LINES):
            listed = [item.strip() for item in takewhile(lambda item: item.startswith("\t"), lines[at + 1:])]
            kept.append(f"{line.rstrip()} {', '.join(listed)}" if listed else line)
    text = kept[0].strip()
    for line in kept[1:]:
        text += f"{' ' if text.endswith(('.', ':')) else '; '}{line.strip()}"
    return text


def error_line(err: Exception) -> str:
    """The one line for an error of `compose_errors`: a `${...}` that does not resolve, or any other."""
    from omegaconf.errors import InterpolationResolutionError

    return bad_interpolation(err) if isinstance(err, InterpolationResolutionError) else bad_config(err)


def bad_interpolation(err) -> str:
    """One line for a `${...}` that does not resolve, with the value and its form that keeps every `${` as text:
    OmegaConf reads `${` in any value as an interpolation, so `prompt=a ${x} cat` asks for a key `x`, and a
    prompt or path that means the characters has to write `\\${`. An unset `${oc.env:NAME}` is most often meant
    (`out_dir=${oc.env:SCRATCH}/runs`): the line says so first (`unset_variable`)."""
    from omegaconf import OmegaConf

    from megadalle.config.override import literal_text, override_word

    reason = str(err).strip().splitlines()[0]
    raw = OmegaConf.to_container(err.parent_node)[err.key] if err.parent_node is not None else None
    if not isinstance(raw, str):
        return f"{err.full_key}: {reason}"
    unset = re.search(r"Environment variable '([^']+)' not found", reason)
    why = unset_variable(err.full_key, raw, unset.group(1)) if unset else f"{reason} (a ${{ starts an interpolation)"
    if err.full_key.startswith("hydra."):  # hydra's own config (`-m`'s hydra.sweep.dir: ${out_dir}/...), no text
        return f"{err.full_key}={raw!r}: {why}"
    as_text = override_word(err.full_key, literal_text(raw))  # each `${` of the value as text, its escapes kept
    return f"{err.full_key}={raw!r}: {why}; to keep it as text write \\${{: {as_text}"


def unset_variable(key: str, raw: str, name: str) -> str:
    """Why `${oc.env:NAME}` with NAME unset did not resolve, and the fixes: set it, or give the interpolation a
    default (`${oc.env:NAME,DEFAULT}`)."""
    from megadalle.config.override import quoted_form

    with_default = raw.replace(f"${{oc.env:{name}}}", f"${{oc.env:{name},DEFAULT}}")
    default = f", or give it a default: {quoted_form(key, with_default)}" if with_default != raw else ""
    return f"environment variable {name} is not set; set it (export {name}=...){default}"


FAILURES: list[list[str]] = []
"""Where `fail` keeps its lines while `failures_kept` lasts."""


@contextmanager
def failures_kept() -> Iterator[list[str]]:
    """The lines `fail` says meanwhile: a sweep job run in a launcher's process (submitit's) hands its line back to
    the sweep, whose log is the one the user reads (megadalle.hydra_app)."""
    kept: list[str] = []
    FAILURES.append(kept)
    try:
        yield kept
    finally:
        FAILURES.remove(kept)


def fail(verb: str, message: str) -> int:
    """Print a user error and return the exit code 2. Every rank of a multi-process launch prints it, after its rank:
    when rank 0 alone did, srun --kill-on-bad-exit (or DeepSpeed's launcher) often killed it for another rank's
    exit before it printed, and a 64-rank job failed with no reason in its log."""
    from megadalle.train.distributed import ranks

    rank, world_size = ranks()
    print(f"megadalle {verb}: {f'rank {rank}: ' if world_size > 1 else ''}{message}", file=sys.stderr)
    for kept in FAILURES:
        kept.append(message)
    return 2


def entry() -> NoReturn:
    """The `megadalle` command and `python -m megadalle`: `main`, then an exit that a finished run's
    process group cannot turn into SIGABRT (megadalle.train.distributed.exit_process). An error no verb reported
    ends a rank as Python ends it (its traceback through sys.excepthook, status 1), but through that exit too, as a
    crash (`note_crash`): the rank's peers may be waiting in a collective it will never join. A Ctrl-C while it reports
    the error is ignored, as at its failed-rank meeting (distributed.shutdown): it cut the report short and left
    through a KeyboardInterrupt traceback instead, without its status."""
    try:
        code = main(to_exit=True)
    except Exception:
        if "megadalle.train.distributed" not in sys.modules:
            raise
        import signal

        from megadalle.train.signals import handled_by

        with handled_by((signal.SIGINT,), signal.SIG_IGN):
            note_crash()
            sys.excepthook(*sys.exc_info())  # torch's, once a group started: every line labelled with the rank
        code = 1
    if "megadalle.train.distributed" in sys.modules:
        from megadalle.train.distributed import exit_process

        exit_process(code)
    sys.exit(code)


def run_verb(verb: str) -> NoReturn:
    """`python -m megadalle.<verb> ARGS`, for a verb whose name is a module or package of megadalle (train, plan,
    demo, encode, export, evaluate): `megadalle <verb> ARGS`. Every verb runs as `python -m megadalle <verb> ARGS`."""
    sys.argv = [sys.argv[0], verb, *sys.argv[1:]]
    entry()


if __name__ == "__main__":
    entry()
