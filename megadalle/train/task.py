"""The task protocol: what a model brings to the generic trainer (OLMo-core's train-module split).

The trainer (megadalle.train.loop) owns everything that is the same for every model: DeepSpeed
(ZeRO 0-3 or pipeline), optimizer and schedule, clipping, accumulation, EMA, checkpoints and
resume, signals, wandb, throughput and MFU. A task owns only what differs: which model, what
loss, which data. The Transformer (megadalle.train.transformer), the dVAE (megadalle.train.dvae)
and CLIP (megadalle.train.clip) are tasks; `megadalle.train.loop.train(task, ...)` runs any of them.

Contract, in the order the trainer uses it:

1. `build_model()` is called once on every rank, after the trainer has seeded python, numpy and
   torch identically on all ranks, so every rank builds the same initial weights. Under ZeRO-3 a
   task with `zero3_init` is built inside `deepspeed.zero.Init` (parameters partitioned as built).
2. `batches(start_step, part)` yields this rank's micro-batches from update `start_step` on;
   the trainer takes `part.grad_accum` of them per update. It must be a pure function of
   (data seed, start_step, part): resuming at step N calls it again with start_step=N and must
   see exactly the batches an uninterrupted run would have seen (levanter-style, no seeking).
   Batches are dicts of tensors (other values pass through untouched); the trainer moves tensors
   to the device and casts floating tensors to the training dtype (bf16 on GPU).
3. `loss(model, batch, step)` returns (scalar loss tensor, {name: float} metrics) for one
   micro-batch. `model` is the plain nn.Module from build_model (under ZeRO-3 its parameters are
   gathered by DeepSpeed's hooks while it runs). Normalise the loss per micro-batch (a mean):
   DeepSpeed averages over accumulation steps and data-parallel ranks. A mean over a count that
   varies between micro-batches (the Transformer's kept text tokens) names that count in
   `loss_counts(batch)`; the trainer then hands every micro-batch the update's totals and the loss
   divides by those (megadalle.train.step_totals), so the update's loss is the mean over all its
   samples' tokens. `step` is the update index, for step-dependent terms (the dVAE's KL weight
   and temperature).
4. Optional: `tokens_per_sample()` and `flops_per_sample()` feed the tokens/s and MFU logs;
   `media(model, step)` returns wandb-loggable values (e.g. {"samples": [wandb.Image]}); it runs
   on every rank under torch.no_grad (ZeRO-3 gathers parameters collectively), rank 0's are logged;
   `pipeline()` returns a PipelineSpec when the model can run as a DeepSpeed PipelineModule; then
   `build_model` is never called, and "the model" handed to the task and the trainer is the stage's
   view (megadalle.train.pipeline.stage_view): its layers at their plain-model paths.
   `validation_batches(part)` yields this rank's micro-batches of held-out data in a fixed order (or
   returns None: no validation); every `trainer.eval_every` updates the trainer evaluates the first
   `trainer.eval_batches` global batches of it with `validation_loss(model, batch, step)` (eval mode,
   no_grad, the same seeded RNG every time), or each global batch's micro-batches together with the evaluator
   `validation_update(part)` returns, if any, and logs the means over ranks as `val/...`; of a split that ends
   (`validation_split()`), at most one pass.
   `data_identity(part)` names what the data order depends on; a resume on other data is refused. A task reading
   shards (`ShardsTask`) takes it from `shard_index`, the index its loaders read too (`rank_batches(index=)`), and
   refuses there a global batch larger than the data set (data/order.py).
   `update_runner(part)` may take over the whole update from the trainer (a loss over all its micro-batches), and
   `validation_update(part)` validate that loss.
   `after_update(model, editor, step)` may rewrite parameters between updates (through the optimizer's
   copies too: train/param_edit.py), and `state()`/`load_state()` carry the task's own state in checkpoints.
5. `export_spec()` names the weights' kind and config for megadalle.weights.save_weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import torch
from torch import nn

from megadalle.train.param_edit import ParamEditor

if TYPE_CHECKING:
    from megadalle.data.index import ShardIndex

Batch = dict[str, Any]
UpdateRunner = Callable[[Any, Sequence[Batch], int], dict[str, float]]
"""(engine, this rank's micro-batches of an update, step) -> the update's metrics: Task.update_runner."""
UpdateValidation = Callable[[nn.Module, Sequence[Batch], int], dict[str, float]]
"""(model, this rank's micro-batches of a validation global batch, step) -> their metrics: Task.validation_update."""


@dataclass(frozen=True)
class DataPart:
    """Which micro-batches of each global batch this rank reads.

    A global batch holds `micro_batch * grad_accum * dp_world` samples. It is cut into
    `grad_accum * dp_world` micro-batches; accumulation step a of data-parallel rank r reads
    micro-batch `a * dp_world + r` (see `reader`). So one process accumulating 2 micro-batches
    reads exactly what two processes read without accumulation: the losses of the two layouts match.
    """

    micro_batch: int
    grad_accum: int
    dp_rank: int
    dp_world: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.dp_world

    @property
    def readers(self) -> int:
        """Number of micro-batches a global batch is cut into."""
        return self.grad_accum * self.dp_world

    def reader(self, accum_index: int) -> int:
        """The micro-batch index (0 <= i < readers) read at accumulation step `accum_index`."""
        return accum_index * self.dp_world + self.dp_rank


@dataclass
class PipelineSpec:
    """A model laid out for DeepSpeed's PipelineModule, as layer recipes: no rank builds a layer it does not run.

    `layers`: DeepSpeed `LayerSpec`s in execution order (each layer takes the previous one's output, a
    tensor or a tuple). A stage builds only its own, layer i under seed base + i as the plain model
    builds its top-level layers (megadalle.models.seeding), so both start from the same weights.
    `layer_names`: layer i's path in the plain model ("embed", "blocks.0", ..., "head"): its
    state_dict keys prefixed with that path and "." are the plain model's parameter names. Export
    and the per-stage EMA rely on it.
    `loss_fn(outputs, labels)`: the loss of the last layer's output, equal to the task's `loss`.
    `split(batch)`: a batch as (inputs, labels); inputs feed the first layer, labels reach
    `loss_fn`; each a tensor or a tuple of tensors.
    `checkpointable`: class names of the layers activation checkpointing may recompute (e.g. the
    Transformer blocks, never an embedding fed integer tokens); `activation_checkpointing` turns
    it on (one layer per recomputed span, torch's non-reentrant checkpoint).
    """

    layers: list[Any]
    layer_names: list[str]
    loss_fn: Callable[[Any, Any], torch.Tensor]
    split: Callable[[Batch], tuple[Any, Any]]
    checkpointable: list[str] = field(default_factory=list)
    activation_checkpointing: bool = False

    def __post_init__(self):
        if len(self.layers) != len(self.layer_names):
            raise ValueError(f"PipelineSpec: {len(self.layers)} layers but {len(self.layer_names)} layer_names")


@dataclass(frozen=True)
class ExportSpec:
    """What `megadalle export` writes beside the weights: the model kind and its config (dataclass or dict)."""

    kind: str
    config: Any


class Task:
    """Base class of training tasks; subclasses implement the first four methods."""

    name: str = "task"
    """Short name, used for the run directory and wandb."""
    zero3_init: bool = False
    """True when `build_model` initialises every parameter inside the __init__ of the module that owns
    it: then ZeRO-3 builds the model inside `deepspeed.zero.Init`, which partitions each module as soon
    as it is constructed, so no rank ever holds the whole model. An init applied after construction
    would meet empty shards there, so such tasks keep the plain construction (whole model per rank)."""
    contrastive: bool = False
    """True when each loss contrasts the samples of its batch with each other (CLIP): a batch that holds a sample
    twice contrasts fewer pairs than it holds, which the refusals of such a batch say."""

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def batches(self, start_step: int, part: DataPart) -> Iterator[Batch]:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def export_spec(self) -> ExportSpec:
        raise NotImplementedError

    def model_config(self):
        """The model's config as this run builds it: `export_spec`'s, but for what shapes only the training model
        (the Transformer's vocabulary tables in pieces). A resume from another run's checkpoint names its keys."""
        return self.export_spec().config

    def loss_counts(self, batch: Batch) -> dict[str, int]:
        """{name: count} of each count `loss` divides by that differs between micro-batches (default: none).

        The trainer sums them over each update's micro-batches and data-parallel ranks and hands the totals to
        every micro-batch of the update as `batch[step_totals.STEP_TOTALS]` (and to validation batches, over the
        whole validation subset); `per_micro_batch(step_total(batch, name))` (train/step_totals.py) is then the
        divisor under which DeepSpeed's mean over micro-batches is the update's mean. A batch without totals (a
        direct call) divides by its own count."""
        return {}

    def after_update(self, model: nn.Module, editor: ParamEditor, step: int) -> dict[str, float]:
        """Called on every rank after update `step` (the optimizer has stepped), before the EMA follows it.

        A task that rewrites its parameters between updates (the dVAE reviving dead codes) does it here,
        through `editor` (train/param_edit.py), identically on every rank; it returns metrics for the
        update's record (the same keys every update). Default: nothing."""
        return {}

    def state(self) -> dict[str, Any]:
        """What the task itself must carry over a resume (saved in every checkpoint; identical on all ranks)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore `state()` of the checkpoint a run resumes from."""

    def tokens_per_sample(self) -> int | None:
        """Tokens (or other units of work) per sample, for the throughput log; None = not logged."""
        return None

    def flops_per_sample(self, model: nn.Module) -> float | None:
        """Training FLOPs (forward + backward) per sample, for MFU; None = MFU not logged."""
        return None

    def data_identity(self, part: DataPart) -> dict[str, Any]:
        """What the data order depends on (e.g. the shard set's fingerprint, seed, global batch).

        Stored in every checkpoint; a resume whose identity differs is refused, because step N of
        other data (or another order) is not where the run stopped. Empty = not checked.
        """
        return {}

    def media(self, model: nn.Module, step: int) -> dict[str, Any]:
        """wandb-loggable values (images, tables) at `step`, every `trainer.media_every` updates.

        Called in eval mode under torch.no_grad on every rank (ZeRO-3 gathers parameters collectively), or with
        a pipeline on rank 0 alone after every stage's layers were copied into its model (train/media.py);
        rank 0's are logged. A `train.media.Picture` value is also written to `<run>/<name>/step_N.png`.
        """
        return {}

    def pipeline(self) -> PipelineSpec | None:
        """The model as pipeline layer recipes, or None when the task cannot run pipelined."""
        return None

    def update_runner(self, part: DataPart) -> UpdateRunner | None:
        """A function running each whole update of this rank itself, or None (the default): the trainer's own.

        The trainer runs forward, backward and step per micro-batch, so a micro-batch's loss sees that micro-batch
        alone. A loss coupling the micro-batches of an update (CLIP contrasting the whole update's batch) runs
        `runner(engine, batches, step)` instead: `batches` are this rank's `part.grad_accum` micro-batches of the
        update, each moved to the device in the training dtype as it is read. It calls the model through the engine, `engine(batch, step,
        run=fn)` returning `fn(model, batch, step)` (ZeRO-3 gathers parameters only within the engine's forward),
        backs each micro-batch up with `engine.backward` and `engine.step()` as the trainer does (DeepSpeed divides
        by the accumulation steps and averages the data-parallel ranks, then steps at the last), and returns this
        rank's metrics of the update, `loss` among them; the trainer adds `loader_metrics` (from the host copies)
        and averages them over ranks. Asked once, on
        every rank, when the run starts; a pipeline never asks (its engine runs the update)."""
        return None

    def validation_batches(self, part: DataPart) -> Iterator[Batch] | None:
        """This rank's validation micro-batches in a fixed order (accumulation order, as `batches`; a seeded
        permutation of the split, `validation_data`), or None when the task has no validation data. The trainer
        reads the first `trainer.eval_batches` global batches once and evaluates the same ones every time, so the
        curve measures the model, not the sample."""
        return None

    def validation_split(self) -> tuple[str, int] | None:
        """(the validation split's folder, its samples) when `validation_batches` reads a split that ends, or None
        (no validation data, or a stream without end). The trainer then reads at most one pass of it (whole global
        batches of its first samples, data/val_pass.py), and refuses a split smaller than the ranks' micro-batches
        together when the run starts. Default: None."""
        return None

    def no_validation(self) -> str:
        """The way out that a run which validates says once when `validation_batches` gives none (validate.py)."""
        return "this task has no validation data"

    def validation_loss(self, model: nn.Module, batch: Batch, step: int) -> dict[str, float]:
        """Metrics of one validation micro-batch, `loss` among them (model in eval mode, under no_grad).

        Default: the training loss and its metrics. Override when `loss` has side effects (running statistics).
        """
        loss, metrics = self.loss(model, batch, step)
        return {"loss": float(loss), **metrics}

    def validation_update(self, part: DataPart) -> UpdateValidation | None:
        """For a task whose `update_runner` couples the micro-batches of an update (CLIP contrasting the whole
        update's batch): `evaluate(model, batches, step)`, the metrics, `loss` among them, of this rank's
        micro-batches of one validation global batch scored together as the runner trains them (model in eval mode,
        under no_grad). The trainer then validates with it in place of `validation_loss`, which sees one
        micro-batch; it adds `loader_metrics`. None (the default): `validation_loss` per micro-batch. Asked once,
        on every rank, with the training's `part`, when a run that validates starts; a pipeline never asks."""
        return None

    def validation_summary(self, device: torch.device) -> dict[str, float]:
        """Metrics of the whole validation subset, from what `validation_loss` kept of its micro-batches: those a
        mean over micro-batches would misstate (the dVAE's codebook perplexity grows with the number of cells it
        is computed on). Called on every rank once the subset has run, after the means (a collective if the task
        makes one); its values replace the means of the same names. Default: none."""
        return {}


def runs_pipelined(task: Task | type[Task]) -> bool:
    """Whether a task (or its class) can run pipelined: it overrides `Task.pipeline`, whose None refuses every config.
    Asked of the class before anything is built (preflight refuses `deepspeed.pipeline_stages` for a task that cannot),
    and of the task by the engine, so that the two refusals cannot disagree."""
    return (task if isinstance(task, type) else type(task)).pipeline is not Task.pipeline


class ShardsTask(Task):
    """A task that trains on the shard directory `self.data.shards` (data.source=shards) with `self.seed`."""

    data: Any
    """The `data` group (a DataConfig), or None."""
    seed: int

    @cached_property
    def shard_index(self) -> ShardIndex:
        """The index of `self.data.shards` this rank reads for the whole run: opened once, with the folder indexed
        first where its tars changed (`ingest.open_index`). The data identity the ranks compare and a resume checks
        is taken from it, and the loaders read it (`rank_batches(index=)`): taken from index.json as it stood, the
        identity was that of an index the loaders then rebuilt, each rank at its own time, from a folder still
        changing (img2dataset downloading), so ranks that agreed on it went on to read other data sets."""
        from megadalle.data.ingest import open_index
        from megadalle.train.signals import stop_requested

        return open_index(self.data.shards, "data.shards", stop_requested)

    def data_identity(self, part: DataPart) -> dict[str, Any]:
        """Also where a run without preflight (the demo, a caller of `train`) first sees both its global batch and
        its data: one larger than the data set is refused here (order.check_global_batch). Token shards add what
        their meta says the codes are (data_identity.codes_identity)."""
        from megadalle.data.order import check_global_batch
        from megadalle.train.data_identity import codes_identity

        if self.data is None or self.data.source != "shards":
            return {}
        check_global_batch(part.micro_batch, part.grad_accum, part.dp_world, self.shard_index.total, self.data.shards,
                           self.contrastive)
        return {"fingerprint": self.shard_index.fingerprint, "seed": self.seed, "shuffle": self.data.shuffle,
                "shuffle_window": self.data.shuffle_window, "global_batch": part.global_batch,
                **codes_identity(self.shard_index.meta)}

    def validation_split(self) -> tuple[str, int] | None:
        from megadalle.data.ingest import open_index

        val = validation_data(self.data)
        return None if val is None else (val.shards, open_index(val.shards, "data.val_shards").total)

    def no_validation(self) -> str:
        return self.data.no_split() if self.data is not None else super().no_validation()


VALIDATION_SEED = 0
"""The seed of the validation subset's permutation and of validation's random draws (the dVAE's Gumbel noise): the
run's own seed would give each run of a sweep over `seed` other samples and other noise to score with, and their
val/loss could not be compared."""


def validation_data(data):
    """The validation split of a `data` group (a DataConfig) as a loader config, or None when it has none.

    Its samples in the order of a full seeded permutation (order.py; VALIDATION_SEED, whatever the run's seed,
    data.shuffle and data.shuffle_window say), so the subset a validation reads (its first positions,
    data/val_pass.py) is drawn at random over the whole split, each sample once, the same at every validation of
    every run. In stored order it was
    the split's head: a folder per source gave the alphabetically first source's val/loss alone, a large split its
    first shard's. Without BPE dropout (the loss of the captions as written) and without worker processes (a few
    batches, read once).
    """
    shards = data.validation_shards() if data is not None else None
    return None if shards is None else replace(data, shards=shards, shuffle=True, shuffle_window=None,
                                               bpe_dropout=0.0, num_workers=0)


def held_out_batches(val, part: DataPart, **shape) -> Iterator[Batch]:
    """This rank's micro-batches of the validation loader config `val` (`validation_data`)."""
    return rank_batches(val, part, VALIDATION_SEED, 0, **shape)


def rank_batches(data, part: DataPart, seed: int, start_step: int, index: ShardIndex | None = None,
                 **shape) -> Iterator[Batch]:
    """This rank's micro-batches of the `data` group from update `start_step`, in accumulation order.

    One loader serves all of the rank's accumulation steps (it reads micro-batch a * dp_world +
    dp_rank, as `DataPart.reader`), so its worker processes start once, not once per step.
    `index` is data.shards' index as the run checked it (`ShardsTask.shard_index`; None: opened here).
    `shape` is the loader's text_len= or image_size=.
    """
    from megadalle.config import ConfigError
    from megadalle.data.loader import loader_from_config

    if data.source != "shards":
        raise ConfigError(f"data.source={data.source!r}: this task reads shards only (data=synthetic serves "
                          "`megadalle train`)")
    return loader_from_config(data, part.global_batch, seed, rank=part.dp_rank, world_size=part.dp_world,
                              grad_accum=part.grad_accum, index=index, **shape).iter_from_step(start_step)


def loader_metrics(batch: Batch) -> dict[str, float]:
    """What the loaders did to a micro-batch without any error, as shares of it: `captions_cut`, the captions longer
    than text_len (cut to fit: their last words are lost), and `images_upscaled`, the images whose short side was
    below the model's input (enlarged: a blurry target; tars from elsewhere hold thumbnails).

    Averaged like the loss, each is the share of each update's captions or images; the console warns at its first
    non-zero value."""
    shares = {"captions_cut": batch.get("text_cut"), "images_upscaled": batch.get("upscaled")}
    return {name: float(flags.float().mean()) for name, flags in shares.items() if flags is not None}
