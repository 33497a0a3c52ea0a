"""A training run's checkpoint as plain weights, streamed one tensor at a time.

The model is rebuilt from the run's own record (`run.json`: the task factory and the full config)
on the meta device, which costs no memory and gives the names and shapes to expect; the tensors
come lazily from whatever layout trained it:
- ZeRO 0-2: the module weights rank 0 saved (`mp_rank_00_model_states.pt`, memory-mapped, each
  tensor's pages handed back once consumed: mapped.py), which are the training weights; only an fp32
  export of a run that trained in lower precision reads the fp32 masters (zero_masters.py; at stage 0 those the
  model-states file holds by position, `stage0_masters`);
- ZeRO-3: the fp32 masters, each parameter gathered from the ranks' partitions (zero_masters.py);
- pipeline: each `layer_NN-model_states.pt` in turn, named through `layer_names` (see `pipeline_names`),
  or for an fp32 export of a bf16 run the stages' fp32 masters (zero_masters.py), named the same way;
- `ema=True`: the EMA pieces every rank saved, consolidated parameter by parameter (ema.py); `ema=None` (the
  verbs' `ema=auto`) reads them where the run trained an EMA (`chosen_ema`).
Vocabulary tables trained in row pieces (`model.vocab_chunk`) are exported joined, under the whole
table's name, and the exported config says `vocab_chunk: 0` (models/vocab_tables.py).
So neither export nor `load_run` ever holds the checkpoint whole. Our own reads use
torch.load(weights_only=True), each torch file once its zip records matched their CRC-32 (zip_crc.py: damage
inside a file would otherwise be exported in silence). A run still training may prune the checkpoint being
read: the newest is then chosen again (`read_checkpoint`). This lives under train/ (it reads train's
checkpoints); the `export` verb and the training verbs that export at their end (train-dvae, train-clip) both
call it.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import torch
from torch import nn

from megadalle import run_pieces
from megadalle.config.ema import ema_argument
from megadalle.config.override import override_word
from megadalle.errors import BundleError
from megadalle.models.vocab_tables import whole_tables
from megadalle.train.checkpoint import CheckpointError, tag_of
from megadalle.train.checkpoint_choice import find_resumable
from megadalle.train.checkpoint_damage import complete_tags, damage
from megadalle.train.ema import EmaPieces
from megadalle.train.mapped import streamed, verified
from megadalle.train.task import Task
from megadalle.train.zero_masters import has_masters, zero_masters
from megadalle.train.zip_crc import DamagedRecord
from megadalle.weights import (DTYPES, SOURCE, ShardedWriter, SingleFileWriter, as_dtype, check_replaceable,
                               export_layout, one_file)

Tensors = Iterator[tuple[str, torch.Tensor]]
T = TypeVar("T")


def run_task(run_dir: str | Path) -> tuple[Task, dict]:
    """The task that trained `run_dir`, rebuilt from its run.json (run_pieces.read, run_pieces.task_factory), and the
    run's config."""
    run = Path(run_dir)
    record = run_pieces.read(run)
    factory, config = run_pieces.task_factory(run, record), record.get("config")
    if not isinstance(config, dict):
        what = "missing" if config is None else f"a JSON {type(config).__name__}"
        raise BundleError(f"{run / 'run.json'}: its config is {what}, not the mapping a training run records, so the "
                          f"run cannot be rebuilt; {run_pieces.RECOPY}")
    return factory(config), config


def read_advice(run_dir: str | Path) -> str:
    """The way out a reader of a run (export, generate, evaluate) has when none of its checkpoints is usable: not the
    training verbs' run_dir= or resume=, which the readers do not take."""
    return (f"to read another checkpoint of the run (STEP: one of its step_* folders): "
            f"{run_pieces.export_advice(Path(run_dir))}")


def chosen_ema(run_dir: str | Path, config: dict, ema: bool | None) -> bool:
    """Whether reading the run means its EMA: `ema` as given; None (the verbs' `ema=auto`) where the run trained
    one (`trainer.ema` in its recorded `config`: every checkpoint holds it, and its validation and media scored
    it, as train-dvae's and train-clip's exports ship it). ema=True for a run without one is refused here, before
    a tensor is read. The record decides, not the files: a checkpoint that lost its EMA files is refused
    (checkpoint_damage, checkpoint_tensors) rather than read as its live weights in silence."""
    if not isinstance(config.get("trainer"), dict):  # a record without the trainer's keys (a run started from the
        return bool(ema)  # API with its own config): as asked, and the checkpoint refuses an EMA it does not hold
    decay = config["trainer"].get("ema")
    if ema and decay is None:
        raise CheckpointError(f"ema=true: {run_dir} trained without an EMA (trainer.ema=null in its run.json): "
                              "drop ema=true for its live weights")
    return decay is not None if ema is None else ema


def run_ema(run_dir: str | Path, ema: bool | None) -> bool:
    """`chosen_ema` for the run directory `run_dir`, from its run.json."""
    return chosen_ema(run_dir, run_pieces.read(Path(run_dir)).get("config", {}), ema)


def checkpoint_dir(run_dir: str | Path, checkpoint: str | Path | None = None) -> Path:
    """The given checkpoint (verified complete, and one of the run's own) or the run's newest complete one."""
    if checkpoint:
        path = named_checkpoint(run_dir, checkpoint)
        check_own_checkpoint(run_dir, path)
        why = damage(path)
        if why:
            raise CheckpointError(f"checkpoint={checkpoint}: {why}")
        return path
    root = Path(run_dir) / "checkpoints"
    tag = find_resumable(root, read_advice(run_dir))
    if tag is None:
        raise CheckpointError(f"{run_dir} has no complete checkpoint under {root}")
    return root / tag


def named_checkpoint(run_dir: str | Path, checkpoint: str | Path) -> Path:
    """`checkpoint=` as a path; a bare name that is no path from here (`step_00000300`, as `ls RUN/checkpoints`
    lists it, or the step, `300`) names that folder of `run_dir`'s checkpoints: it was refused as "not in the
    checkpoints folder" of the run that held it."""
    path = Path(checkpoint)
    if path.exists() or len(path.parts) != 1:
        return path
    name = tag_of(int(path.name)) if path.name.isdigit() else path.name
    return Path(run_dir, "checkpoints", name)


def check_own_checkpoint(run_dir: str | Path, path: Path) -> None:
    """Refuse a checkpoint that is not a step_* folder of `run_dir`'s checkpoints: the run's record rebuilds the
    model, and beside another run's weights of the same shapes its tokenizer and dVAE would be written into the
    export (or sampled with) in silence. The run it belongs to is named, to be passed as run= instead; where that
    is `run_dir` itself, what was given (a file of a step_* folder, the checkpoints folder) and what to give."""
    from megadalle.sampling.load import checkpoint_in_run

    own = Path(run_dir, "checkpoints").resolve()
    if path.resolve().parent == own:
        return
    owner = checkpoint_in_run(path.resolve())
    if owner is None:
        raise CheckpointError(f"checkpoint={path}: not in the checkpoints folder of run={run_dir} ({own}); pass one "
                              f"of its step_* folders, or the training run this checkpoint came from as run=")
    if owner[0] == own.parent and owner[1] is None:
        raise CheckpointError(f"checkpoint={path}: the checkpoints folder of run={run_dir}; checkpoint= takes one of "
                              "its step_* folders (left out, the newest complete one is taken)")
    if owner[0] == own.parent:
        raise CheckpointError(f"checkpoint={path}: a file of the checkpoint {owner[1].name} of run={run_dir}, not a "
                              f"step_* folder; pass {override_word('checkpoint', owner[1])}")
    raise CheckpointError(f"checkpoint={path}: a checkpoint of the training run {owner[0]}, not of run={run_dir}, "
                          f"whose record would describe other weights; pass {override_word('run', owner[0])} with it")


def meta_model(task: Task) -> nn.Module:
    """The task's model with no storage: names and shapes only, filled later by assignment. Built without a draw
    from torch's global generator (the Transformer takes its layers' base seed from it, models.seeding): reading a
    run is no random draw of the caller's, as `load_model` promises."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return task.build_model()


def pipeline_names(task: Task, model: nn.Module) -> list[dict[str, str]]:
    """For each pipeline layer i, {its state_dict key: the plain model's name}: key k of layer i is
    `layer_names[i] + "." + k` (`PipelineSpec.layer_names`, the plain sub-module path of each layer)."""
    return [{key: f"{prefix}.{key}" for key in _layer_keys(model, prefix)} for prefix in task.pipeline().layer_names]


def _layer_keys(model: nn.Module, prefix: str) -> list[str]:
    return list(model.get_submodule(prefix).state_dict().keys())


def _pipeline_tensors(task: Task, model: nn.Module, path: Path, dtype: torch.dtype) -> Tensors:
    names = pipeline_names(task, model)
    widen = finer(dtype, verified(path / "layer_00-model_states.pt"))
    if widen:
        refuse_unread_masters(path)
    if widen and has_masters(path):
        for name, tensor in zero_masters(path):
            index, _, key = name.partition(".")
            if not index.isdigit():
                raise CheckpointError(f"{path}: the optimizer holds {name}, which is no pipeline layer's parameter")
            yield _plain_name(names, int(index), key, path), tensor
        return
    for i in range(len(names)):
        for key, value in streamed(verified(path / f"layer_{i:02d}-model_states.pt")):
            yield _plain_name(names, i, key, path), value


def _plain_name(names: list[dict[str, str]], layer: int, key: str, path: Path) -> str:
    if layer >= len(names) or key not in names[layer]:
        raise CheckpointError(f"{path}: layer {layer} holds {key}, which the model's layer {layer} does not have")
    return names[layer][key]


def finer(dtype: torch.dtype, state: dict) -> bool:
    """Whether an export in `dtype` keeps more of the weights than the module's `state` holds: fp32, or fp16 (3 more
    mantissa bits), of a bf16 run, which only its fp32 masters give. fp16 was cast from the bf16 weights under
    ZeRO 0-2 and pipelines (1.2e-3 from the masters) and from the masters under ZeRO-3 (4.9e-4): one run exported
    two models by its layout."""
    return dtype != torch.bfloat16 and not all(t.dtype == torch.float32 for t in state.values())


def stage0_masters(path: Path, states: dict) -> list[list[torch.Tensor] | torch.Tensor] | None:
    """The fp32 masters of a bf16 run at ZeRO stage 0, by optimizer group (None for any other checkpoint); `states`
    is the checkpoint's (mapped) model-states file. DeepSpeed saves them there without names: its
    FP16_UnfusedOptimizer (torch's AdamW) one tensor a parameter (`fp32_groups`), its FP16_Optimizer (apex's
    FusedAdam, which megadalle took where apex was importable) one flat tensor a group (`fp32_groups_flat`)."""
    if has_masters(path):
        return None
    optimizer = states.get("optimizer") or {}
    return optimizer.get("fp32_groups", optimizer.get("fp32_groups_flat"))


def refuse_unread_masters(path: Path) -> None:
    """A pipeline's stage-0 masters are not read (their positions would have to be mapped per stage): an fp32
    export of such a run is refused by name rather than widened from its bf16 weights."""
    module_file = path / "mp_rank_00_model_states.pt"
    if module_file.is_file() and stage0_masters(path, verified(module_file)) is not None:
        raise CheckpointError(f"{path}: dtype=fp32 needs the fp32 masters of this bf16 pipeline at ZeRO stage 0, "
                              "which export does not read; export dtype=bf16 (the weights it trained), or train "
                              "at deepspeed.zero_stage>=1")


def _named_masters(model: nn.Module, groups: list[list[torch.Tensor] | torch.Tensor],
                   path: Path) -> dict[str, torch.Tensor]:
    """Stage-0 masters by parameter name: the optimizer's groups are `engine.param_groups` of the model,
    in its parameters' order, so the same call on the (meta) model names each position; a flat group is cut at
    the parameters' sizes, in that order (FP16_Optimizer flattened them so, unpadded)."""
    from megadalle.train.engine import param_groups

    params = [group["params"] for group in param_groups(model, 0.0)]
    if all(isinstance(group, torch.Tensor) for group in groups):
        sizes = [sum(p.numel() for p in group) for group in params]
        if [group.numel() for group in groups] != sizes:
            raise CheckpointError(f"{path}: the optimizer's flat fp32 groups hold {[g.numel() for g in groups]} "
                                  f"values, the model's parameter groups {sizes}")
        groups = [[piece.view(p.shape) for piece, p in zip(flat.split([p.numel() for p in group]), group)]
                  for flat, group in zip(groups, params)]
    if [len(g) for g in params] != [len(g) for g in groups]:
        raise CheckpointError(f"{path}: the optimizer's fp32 groups hold {[len(g) for g in groups]} tensors, the "
                              f"model's parameter groups {[len(g) for g in params]}")
    name_of = {id(p): name for name, p in model.named_parameters()}
    return {name_of[id(p)]: tensor for group, masters in zip(params, groups) for p, tensor in zip(group, masters)}


def _zero_tensors(path: Path, dtype: torch.dtype, model: nn.Module) -> Tensors:
    module_file = path / "mp_rank_00_model_states.pt"
    states = verified(module_file) if module_file.is_file() else {}
    module = states.get("module")
    need_masters = not module or finer(dtype, module)  # ZeRO-3 saves no module weights
    stage0 = stage0_masters(path, states) if need_masters and module else None
    if stage0 is not None:
        masters = _named_masters(model, stage0, path)
        for name, tensor in streamed(module):
            plain = name.removeprefix("model.")
            yield plain, as_dtype(masters[plain], dtype) if plain in masters else tensor
    elif need_masters and has_masters(path):
        yield from ((name.removeprefix("model."), t) for name, t in zero_masters(path, dtype))
    elif module:
        yield from ((name.removeprefix("model."), t) for name, t in streamed(module))
    else:
        raise CheckpointError(f"{path} holds neither module weights nor ZeRO optimizer shards")


def checkpoint_tensors(task: Task, model: nn.Module, path: Path, ema: bool = False, dtype=torch.float32) -> Tensors:
    """(plain name, tensor) of the checkpoint at `path`, one at a time (see the module docstring)."""
    if ema:
        try:
            yield from EmaPieces(path)
        except (FileNotFoundError, ValueError) as err:
            raise CheckpointError(f"the EMA weights: {err}; ema=false reads the live weights") from err
    elif any(path.glob("layer_*-model_states.pt")):
        yield from _pipeline_tensors(task, model, path, dtype)
    else:
        yield from _zero_tensors(path, dtype, model)


def checked(model: nn.Module, tensors: Tensors, path: Path) -> Tensors:
    """`tensors`, refused unless they are exactly the model's state, with its shapes."""
    expected = {name: t.shape for name, t in model.state_dict().items()}
    seen = set()
    for name, tensor in tensors:
        if name not in expected:
            raise CheckpointError(f"{path} holds {name}, which the run's model does not have")
        if tensor.shape != expected[name]:
            raise CheckpointError(f"{path}: {name} has shape {tuple(tensor.shape)}, the model {tuple(expected[name])}")
        seen.add(name)
        yield name, tensor
    missing = sorted(set(expected) - seen)
    if missing:
        raise CheckpointError(f"{path} lacks {len(missing)} of the model's tensors, e.g. {missing[:3]}")


READ_ATTEMPTS = 3
"""Checkpoints chosen and read at most this often when the chosen one goes while it is read (pruned by a run
still training, `trainer.keep_checkpoints`): each attempt takes the newest complete checkpoint again."""


def read_checkpoint(run_dir: str | Path, checkpoint: str | Path | None, read: Callable[[Path], T],
                    instead: Callable[[Path], str]) -> T:
    """`read(path)` of the checkpoint `checkpoint_dir` chooses; `instead(older)` says how to use an older one.

    A run still training deletes its older checkpoints as it saves (`trainer.keep_checkpoints`), possibly the
    one being read: its files vanish and the read fails with whatever error the missing file gave. A read that
    fails while the checkpoint is no longer complete is therefore a pruned checkpoint: the newest is chosen
    again (READ_ATTEMPTS in all), and a `checkpoint=` given is refused by name. A file damaged inside
    (zip_crc.py) names the complete checkpoint before it."""
    gone = ""
    for _ in range(READ_ATTEMPTS):
        path = checkpoint_dir(run_dir, checkpoint)
        try:
            return read(path)
        except DamagedRecord as err:
            older = complete_tags(path.parent, before=path.name)
            raise CheckpointError(f"{err}; {instead(path.parent / older[-1])}" if older else
                                  f"{err}, and no complete checkpoint is older than {path.name}") from err
        except Exception as err:
            gone = damage(path)
            if gone is None:
                raise
            if checkpoint:
                raise CheckpointError(f"checkpoint={checkpoint} went while it was read ({gone}): a run still "
                                      "training deletes its older checkpoints (trainer.keep_checkpoints); pass a "
                                      "newer one, or no checkpoint= for the newest") from err
            print(f"[checkpoint] {path} went while it was read ({gone}), pruned by a run still training: taking "
                  "the newest again", file=sys.stderr, flush=True)
    raise CheckpointError(f"{run_dir}: the newest checkpoint went while it was read, {READ_ATTEMPTS} times (last: "
                          f"{gone}): a run still training deletes its older checkpoints (trainer.keep_checkpoints); "
                          "read it once the run stops, or train with a larger trainer.keep_checkpoints")


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None, ema: bool | None = None,
             dtype: torch.dtype = torch.float32, kind: str | None = None) -> tuple[nn.Module, Task]:
    """The run's model (CPU, eval mode, floating tensors in `dtype`) with the newest complete checkpoint's weights:
    its EMA, its live weights, or with None (the default, as load_model's and the verbs' ema=auto) its EMA where it
    trained one (`chosen_ema`); each tensor is cast as it is read, so a bf16 load never holds an fp32 copy of the
    model. `kind`: the model the caller expects (load_model's), refused otherwise before a tensor is read."""
    ema = ema_argument(ema)
    task, config = run_task(run_dir)
    if kind is not None:
        from megadalle.sampling.load import check_run_kind

        check_run_kind(run_dir, task.export_spec(), kind)
    ema = chosen_ema(run_dir, config, ema)

    def read(path: Path) -> nn.Module:
        model = meta_model(task)
        tensors = checked(model, checkpoint_tensors(task, model, path, ema, dtype), path)
        state = {name: as_dtype(t, dtype).clone() for name, t in tensors}
        model.load_state_dict(state, strict=True, assign=True)
        return model.eval()

    def instead(older: Path) -> str:
        return (f"load {override_word('checkpoint', older)} instead (to generate from it: "
                f"{run_pieces.export_advice(Path(run_dir), older)})")

    return read_checkpoint(run_dir, checkpoint, read, instead), task


def source_record(run_dir: str | Path, checkpoint: str, ema: bool) -> dict:
    """What an export records of what it read (weights.records.SOURCE): the run, resolved, its checkpoint's name, and
    whether it read the EMA; `final_export.current` compares it with the export a finished run would write."""
    return {"run": str(Path(run_dir).resolve()), "checkpoint": checkpoint, "ema": ema}


def export(run_dir: str | Path, output: str | Path, checkpoint: str | Path | None = None, ema: bool | None = None,
           dtype: str = "bf16", max_shard_bytes: int = 5 << 30, before_replace: Callable[[], None] | None = None,
           trained: tuple[Task, dict] | None = None, alone: bool = False) -> Path:
    """Write the run's weights in `dtype`: a folder of shards + index + config.json, or, when `output`
    ends in .safetensors, that one file with its config JSON beside. Either way only the tensor being
    written is held (weights/writers.py, planned_safetensors.py). `ema`: the EMA, the live weights, or None for the EMA
    where the run trained one (`chosen_ema`: the weights its validation scored). `before_replace` is called once
    every tensor is written, just before an earlier export at `output` is replaced (the writers' `close`).
    `trained`: the run's task and config (`run_task`), where the caller has them already; `alone`: the Transformer's
    weights written alone (`export weights_only`), which no model folder takes (check_replaceable). A CLIP's
    config JSON holds the record of its tokenizer (sampling/clip_record.py) as the export writes it, so that no
    CLIP is ever in place without it."""
    task, config = trained or run_task(run_dir)
    ema = chosen_ema(run_dir, config, ema)
    spec, torch_dtype = task.export_spec(), DTYPES[dtype]
    check_replaceable(output, kind=spec.kind, alone=alone, run=run_dir)  # before a checkpoint is chosen
    record = {}
    if spec.kind == "clip":
        from megadalle.sampling import clip_record

        record = clip_record.export_record(Path(run_dir))

    def write(path: Path) -> Path:
        source = {SOURCE: source_record(run_dir, path.name, ema)}
        model = meta_model(task)
        state, place = whole_tables(model)  # vocabulary tables trained in pieces are written whole
        tensors = checked(model, checkpoint_tensors(task, model, path, ema, torch_dtype), path)
        layout = export_layout(state, torch_dtype)
        writer = (SingleFileWriter(Path(output), layout, spec.kind) if one_file(output)
                  else ShardedWriter(Path(output), layout, spec.kind, max_shard_bytes))
        try:
            for name, tensor in tensors:
                whole, first_row = place(name)
                writer.add(whole, tensor, first_row)
            return writer.close(spec.config, before_replace, {**record, **source})
        except BaseException:
            writer.abort()
            raise

    return read_checkpoint(run_dir, checkpoint, write,
                           lambda older: f"export {override_word('checkpoint', older)} instead")
