"""Loading the chosen checkpoint (checkpoint_choice.py) on every rank: DeepSpeed's state, the generators, the EMA;
and, before the start-up, refusing a `resume=` checkpoint of another model's shapes (`check_resumed_model`).

Every rank reads its own files, and any of them may fail on damage the completeness test could not see; the
ranks then stop together with one line that says which checkpoint to resume from instead, rather than leave
the others in the next collective.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch

from megadalle.config.override import command_line
from megadalle.train import apex_adam, distributed, rng, schedule
from megadalle.train.checkpoint import CheckpointError, one_line
from megadalle.train.checkpoint_damage import complete_tags
from megadalle.train.masters import torch_optimizer
from megadalle.train.task import Task


def check_resumed_model(task: Task, resume: str) -> None:
    """Refuse, before the start-up, a `resume=` checkpoint whose run trained a model of other shapes than `task`'s,
    naming the first parameter that differs and the model keys that run trained with (the task rebuilt from its
    run.json, consolidate.run_task). DeepSpeed's strict load said only "Error(s) in loading state_dict", which
    `load` took for damage. resume=auto or never, or a checkpoint without its run's run.json, has nothing to compare."""
    run = Path(resume).parent.parent  # <run>/checkpoints/step_N
    if resume in ("auto", "never") or not (run / "run.json").is_file():
        return
    from megadalle.train.consolidate import meta_model, run_task

    try:
        source, config = run_task(run)
    except (ValueError, KeyError, OSError, ImportError, AttributeError):  # a record it cannot rebuild: `load` says
        return
    there, here = shapes(meta_model(source)), shapes(meta_model(task))
    if there == here:
        return
    name = next(name for name in [*there, *here] if there.get(name) != here.get(name))
    keys = model_keys(source, task, config)
    raise CheckpointError(
        f"resume={resume}: its run trained another model than the one configured here ({name}: {there.get(name)} "
        f"there, {here.get(name)} here); " + (f"give the model keys it trained with: {' '.join(keys)}" if keys else
                                              f"configure the model its {run / 'run.json'} records"))


def shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    return {name: list(param.shape) for name, param in model.named_parameters()}


def model_keys(source: Task, task: Task, config: dict) -> list[str]:
    """`group.key=value` for each model key whose value in the `source` run (its recorded `config`) differs from
    `task`'s, found under the group of `config` that holds the model's keys; none for a task of another kind."""
    if type(source) is not type(task):
        return []
    there, here = (spec if isinstance(spec, dict) else dataclasses.asdict(spec)
                   for spec in (source.model_config(), task.model_config()))
    group = next((key for key, node in config.items() if isinstance(node, dict) and set(there) <= set(node)), None)
    if group is None:
        return []
    return [f"{group}.{key}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}"
            for key, value in there.items() if value != here.get(key)]


def load(engine, path: Path, rank: int, ema=None, universal: Path | None = None) -> dict:
    """Load DeepSpeed state, this rank's generators and EMA from `path`; return the client state.

    `universal`: the checkpoint's universal form (the data-parallel size changed; see universal.py).
    Then DeepSpeed's state comes from there, and a rank the saving run did not have keeps the
    generators it was seeded with (a warning says so): its dropout masks cannot be the old ones anyway.

    A failure on any rank stops every rank with the first one's error in one line, which names the
    checkpoint and the complete one before it: damage inside a file (checkpoint_damage.damage sees only its
    ends) that breaks a pickle or a zip record's header shows here, as torch's own error.

    Resume does not check the records' CRC-32, as export, generate and `load_run` do (zip_crc.py), so damage
    inside a tensor's bytes loads in silence here. What resume trains from is each rank's share of the fp32
    masters and optimizer states (at 12B, ~18 GB a rank at 8-way ZeRO-2): checking it is a second pass over every
    byte before the load (zlib's CRC-32 ran at ~1 GB/s on one core of the CI machine: ~20 s a rank, and a second
    read from shared storage where the page cache cannot hold a node's shares), on every resume, Slurm requeues
    included. The module states file alone would be cheaper but is no use here: under ZeRO 1-2 the fp32 masters
    overwrite its weights at resume, so its damage cannot reach the run, and export checks it.
    """
    client_state, error = {}, None
    try:
        client_state = _read(engine, path, rank, ema, universal)
    except CheckpointError as err:
        error = str(err)
    except Exception as err:  # whatever reading a damaged file raises: KeyError, UnpicklingError, RuntimeError...
        error = unreadable(err, path, universal)
    error = distributed.first_error(error)
    if error is not None:
        raise CheckpointError(error)
    return client_state


def unreadable(err: Exception, path: Path, universal: Path | None) -> str:
    """Why the checkpoint `path` failed to load with `err`: another model's (torch names the first parameter whose
    shape or name differs), one whose Adam state apex's FusedAdam saved that the load could not convert (only
    DeepSpeed's ZeRO-3 universal loading reads a parameter's step itself, and apex kept none there; nor DeepSpeed's
    FP16_Optimizer at bf16 stage 0: apex_adam.py), else damage, with the complete checkpoint before it to go back to."""
    source = universal or path
    if isinstance(err, KeyError) and err.args == apex_adam.FLAT_MASTERS_KEY_ERROR:
        export = command_line("export", run=path.parent.parent, checkpoint=path, output="DIR", weights_only=True,
                              dtype="fp32")
        return (f"cannot load the checkpoint {source}: its optimizer state was {apex_adam.FLAT_MASTERS}; its weights "
                f"still export: `{export}` reads its fp32 masters (a pipeline's: dtype=bf16); to train on, resume it "
                "with the megadalle version that saved it")
    if isinstance(err, KeyError) and err.args == ("step",) and universal is not None:
        return (f"cannot load the checkpoint {source}: its optimizer state was {apex_adam.SAVED_WITH_APEX}, which a "
                f"universal checkpoint cannot carry into torch's AdamW; resume {path} on as many ranks as saved it")
    if isinstance(err, RuntimeError) and str(err).startswith(STATE_DICT_ERROR):
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), "")[:300]
        return (f"cannot load the checkpoint {source}: it holds another model than the one configured ({detail}); "
                "resume from it with the model keys its run trained with (its run.json)")
    older = complete_tags(path.parent, before=path.name)
    return (f"cannot load the checkpoint {source} ({one_line(err)}); if it is damaged, "
            + (f"resume from the complete one before it: resume={path.parent / older[-1]}" if older
               else "start over in a new run_dir: no complete checkpoint precedes it"))


STATE_DICT_ERROR = "Error(s) in loading state_dict"
"""How torch's Module.load_state_dict begins its error for parameters of other shapes or names (strict load)."""


def _read(engine, path: Path, rank: int, ema, universal: Path | None) -> dict:
    source = universal or path
    loaded, client_state = engine.load_checkpoint(str(source.parent), tag=source.name, load_module_strict=True,
                                                  load_optimizer_states=True, load_lr_scheduler_states=True)
    if loaded is None:
        raise CheckpointError(f"DeepSpeed could not load the checkpoint {source}")
    apex_adam.settle(torch_optimizer(engine.optimizer))
    schedule.rejoin(engine.lr_scheduler)
    rng_file = path / rng.file_name(rank)
    if rng_file.is_file():
        rng.restore(torch.load(rng_file, weights_only=True))
    elif universal is not None:
        print(f"[checkpoint] warning: {rng_file} is missing (the run was saved by fewer ranks); rank {rank} keeps "
              "freshly seeded generators", file=sys.stderr, flush=True)
    else:
        raise CheckpointError(f"{rng_file} is missing: was the run saved with a different number of ranks?")
    if ema is not None:
        try:
            ema.load(path)
        except (FileNotFoundError, ValueError) as err:
            raise CheckpointError(f"cannot restore the EMA: {err}") from err
    return client_state
