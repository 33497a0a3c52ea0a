"""Training configuration: the trainer (conf/trainer/), DeepSpeed (conf/deepspeed/), the logger (conf/logger/).

These three groups are shared by every training verb (`train`, `train-dvae`, `train-clip`): each task
brings its own model and data config, the trainer reads only these.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from megadalle.config import check, check_seed

DECAYS = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
WANDB_MODES = ("offline", "online", "disabled")
REDUCE_DTYPES = ("fp32", "bf16")
MAX_STEPS = 10**8 - 1
"""The last update a checkpoint's name holds (train/checkpoint.py TAG: step_ and 8 digits)."""


@dataclass
class TrainerConfig:
    steps: int = 1000
    """Optimizer updates to train for (the run ends at this step, resumed or not)."""
    micro_batch: int = 8
    """Samples per data-parallel rank per forward/backward."""
    grad_accum: int = 1
    """Micro-batches accumulated per update; global batch = micro_batch * grad_accum * data-parallel ranks."""
    lr: float = 4.5e-4
    """Peak learning rate, reached at the end of the warm-up (the paper's: 4.5e-4 for the Transformer, 1e-4 for the
    dVAE; each training verb's trainer preset, conf/trainer/, holds its own)."""
    min_lr: float = 0.0
    """Learning rate at the end of the decay."""
    warmup_steps: int = 5000
    """Linear warm-up from 0 to `lr` over this many updates."""
    decay: str = "cosine"
    """Shape of the decay from `lr` to `min_lr` after the warm-up: cosine, linear or constant (no decay)."""
    decay_steps: int | None = None
    """Updates over which the decay runs after the warm-up; null means until `steps`. Set, the curve no longer
    depends on `steps`: a resume that changes `steps` keeps its curve with the old `steps - warmup_steps` here
    (the resume warns, naming it, when the learning rate would change)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.96])
    """AdamW betas (the paper's Transformer uses 0.9, 0.96)."""
    eps: float = 1e-8
    """AdamW's epsilon, added to the second moment's root: larger values damp the updates of parameters whose
    gradients are tiny (CLIP's trainer uses 1e-6)."""
    weight_decay: float = 4.5e-2
    """Decoupled weight decay, applied to matrices only (not to biases, norms or embeddings' gains)."""
    grad_clip: float = 4.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    ema: float | None = None
    """Decay of an exponential moving average of the weights (the paper's: 0.99 for the Transformer, 0.999 for the
    dVAE), or null for none. The decay warms up as TensorFlow's num_updates form: the average after update t (0-based)
    takes min(ema, (1 + t) / (10 + t)), 0.1 after the first and this value after ~9 / (1 - ema) updates (890 at 0.99),
    so a short run's EMA is of its latest weights rather than its random initialisation. t is the update index, so a
    resume averages as the run would have; a checkpoint saved before the warm-up existed resumed at an update t below
    ~9 / (1 - ema) averages with (1 + t) / (10 + t), not the fixed decay it was trained with, until then. With one,
    validation (val/...) and media are computed with the EMA weights, the ones export ships and generate and evaluate
    read from the run directory (their ema=auto; ema=false for the live weights)."""
    precision: str = "auto"
    """auto = bf16 with fp32 master weights on GPU, fp32 on CPU; or force fp32 / bf16."""
    checkpoint_every: int = 1000
    """Save a checkpoint every this many updates (and always at the end and on SIGUSR1/SIGTERM); 0 = only those."""
    keep_checkpoints: int = 3
    """Complete checkpoints kept on disk (older ones are deleted once a newer one is complete); 0 keeps all.
    Counted back from the one just saved: after a resume from an older checkpoint, later ones are set aside."""
    log_every: int = 10
    """Print a progress line and send wandb the update's metrics every this many updates (and after the last);
    metrics.jsonl gets every update's."""
    media_every: int = 0
    """Ask the task for media (e.g. sample images) every this many updates; 0 = never."""
    eval_every: int = 0
    """Validation loss on the held-out data (data.val_shards) every this many updates, logged as val/...; 0 = never."""
    eval_batches: int = 4
    """Global batches of validation data evaluated each time (the same ones every time); at most one pass of the split:
    fewer when it holds fewer whole global batches (said once at the start; data/val_pass.py)."""
    fused_optimizer: bool = True
    """torch's AdamW with `fused=True` (CUDA and CPU; never apex's FusedAdam, whose per-group step count does not
    resume as AdamW's nor count right under ZeRO-3); false runs torch's default (foreach) AdamW."""
    keep_freed_memory: bool = True
    """On the CPU, fix glibc's mmap and trim thresholds so freed buffers are reused instead of faulted in again
    every update (1.2-1.4x faster small-batch updates; the process keeps its peak heap). Any MALLOC_*_ variable
    in the environment wins (megadalle/train/cpu_malloc.py)."""

    def validate(self, where: str = "trainer") -> None:
        for name in ("steps", "micro_batch", "grad_accum", "log_every", "eval_batches"):
            check(getattr(self, name) > 0, f"{where}.{name}", getattr(self, name), "must be positive")
        for name in ("warmup_steps", "checkpoint_every", "keep_checkpoints", "media_every", "eval_every", "min_lr", "grad_clip",
                     "weight_decay"):
            check(getattr(self, name) >= 0, f"{where}.{name}", getattr(self, name), "must be non-negative")
        check(self.steps <= MAX_STEPS, f"{where}.steps", self.steps,
              f"at most {MAX_STEPS:,}: checkpoints are named with 8 digits (step_00001000), and a later one's name "
              "would be found by no resume")
        check(self.lr > 0, f"{where}.lr", self.lr, "must be positive")
        check(self.min_lr <= self.lr, f"{where}.min_lr", self.min_lr, f"must not exceed lr={self.lr}")
        check(self.decay in DECAYS, f"{where}.decay", self.decay, f"expected one of {DECAYS}")
        check(self.decay_steps is None or self.decay_steps > 0, f"{where}.decay_steps", self.decay_steps,
              "must be positive or null")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"{where}.betas", self.betas,
              "must be two numbers in [0, 1)")
        check(self.eps > 0, f"{where}.eps", self.eps, "must be positive")
        check(self.ema is None or 0 < self.ema < 1, f"{where}.ema", self.ema, "must be in (0, 1) or null")
        check(self.precision in PRECISIONS, f"{where}.precision", self.precision, f"expected one of {PRECISIONS}")


def _in_elements(blocks: float, block_numel: int) -> int | None:
    """`blocks` of the model's blocks as elements; None for 0 (DeepSpeed's own default)."""
    return int(blocks * block_numel) if blocks else None


ABSENT = object()


def extra_value(extra: dict, dotted: str, default: Any = ABSENT) -> Any:
    """The value of DeepSpeed key `dotted` (`zero_optimization.stage`) in `extra`, else `default`."""
    node: Any = extra
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


TYPED_EXTRA = {
    "train_micro_batch_size_per_gpu": "trainer.micro_batch",
    "gradient_accumulation_steps": "trainer.grad_accum",
    "train_batch_size": "trainer.micro_batch and trainer.grad_accum (global batch = micro_batch * grad_accum * "
                        "data-parallel ranks)",
    "gradient_clipping": "trainer.grad_clip",
    "optimizer": "trainer.lr, trainer.betas, trainer.eps and trainer.weight_decay (train's own AdamW)",
    "scheduler": "trainer.lr, trainer.warmup_steps, trainer.decay, trainer.decay_steps and trainer.min_lr (train's "
                 "own schedule)",
    "bf16.enabled": "trainer.precision",
    "bfloat16.enabled": "trainer.precision",
    "fp16.enabled": "trainer.precision (fp32 or bf16; train has no fp16)",
    "amp.enabled": "trainer.precision (fp32 or bf16; train has no amp)",
    "data_types.grad_accum_dtype": "{where}.grad_accum_dtype",
    "communication_data_type": "{where}.communication_dtype",
}
"""DeepSpeed keys that typed keys set (train/engine.py ds_config and build): in `extra`, deep-merged last, they
replaced the typed value while plan and run.json still showed it (`gradient_clipping`, `bf16.enabled`), were
ignored (`optimizer`: train passes its own), or failed inside DeepSpeed after start-up (the batch sizes)."""


@dataclass
class DeepSpeedConfig:
    zero_stage: int = 1
    """ZeRO stage: 0 (plain data parallel), 1 (optimizer state sharded), 2 (+ gradients), 3 (+ parameters)."""
    pipeline_stages: int = 1
    """Pipeline stages; >1 builds a DeepSpeed PipelineModule (data-parallel degree = world size / stages)."""
    partition_method: str = "type:Block"
    """How the pipeline splits its layers: `type:<regex>` balances layers whose class name matches, or
    `parameters` / `uniform` (DeepSpeed's methods; `parameters` counts each layer built on the meta device)."""
    overlap_comm: bool = True
    """Overlap gradient reduction with the backward (DeepSpeed's ZeRO 1, 2 and 3 optimizers; its pipeline
    engine cannot, so pipelines leave it off; under bf16 with fp32 accumulation ZeRO-1 runs DeepSpeed's
    BF16_Optimizer, which reduces once per update and has no overlap)."""
    reduce_bucket_size: int = 50_000_000
    """Elements per gradient-reduction bucket."""
    grad_accum_dtype: str = "fp32"
    """bf16 runs only: dtype gradients are accumulated in over micro-batches (DeepSpeed's
    `data_types.grad_accum_dtype`). fp32 keeps small per-micro-batch gradients from vanishing in bf16
    sums; DeepSpeed 0.19.8 supports it with ZeRO 1-3 and pipelines, not with zero_stage=0."""
    communication_dtype: str = "fp32"
    """bf16 runs only: dtype of the gradient reduction across data-parallel ranks (DeepSpeed's
    `communication_data_type`); fp32 sums many ranks' gradients without bf16 rounding, at twice the bytes."""
    zero3_window_blocks: float = 2.0
    """ZeRO-3 only: how many of the model's blocks' parameters may be gathered at once
    (`stage3_max_live_parameters`) and how far ahead a gathered parameter's next use may lie for it to
    stay gathered (`stage3_max_reuse_distance`). DeepSpeed's own 1e9 elements for both hold a model
    under ~1B parameters whole from its forward to its backward, and 1e9 at any size: its prefetcher
    runs ahead to that cap. Two blocks overlap one block's gather with the previous block's compute and
    keep a block gathered from its recomputation to its backward. 0 leaves DeepSpeed's defaults;
    `extra.zero_optimization` keys override either value."""
    zero3_sub_group_blocks: float = 1.0
    """ZeRO-3 only: the optimizer step works through this rank's partition in sub-groups of at most this
    many blocks' worth of elements (DeepSpeed's `sub_group_size`; a sub-group holds whole parameter
    partitions). Each sub-group's step holds about three fp32 copies of it at once (its flattened gradient
    and Adam's temporaries): with DeepSpeed's default of 1e12 the whole partition, which made the step
    the peak of a ZeRO-3 rank (benchmarks/RESULTS.md). 0 leaves DeepSpeed's default;
    `extra.zero_optimization.sub_group_size` overrides it."""
    timeout_minutes: float = 30.0
    """Timeout of the process group's collectives: a rank waiting longer for its peers fails instead of
    hanging (raise it when a step, a checkpoint save or a data-loader start can take longer)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Raw DeepSpeed config keys deep-merged last, for anything this schema does not name: a nested
    mapping updates the mapping it meets key by key (`{zero_optimization: {stage3_max_live_parameters: N}}`
    keeps the stage), any other value replaces. Keys that typed keys set (TYPED_EXTRA: the batch sizes, gradient
    accumulation and clipping, bf16/fp16, the optimizer, the schedule...) are refused, naming the typed key."""

    def zero3_window(self, block_numel: int) -> int | None:
        """Elements of ZeRO-3's window for blocks of `block_numel` parameters (None: DeepSpeed's defaults).
        train sets it (train/engine.py) and plan predicts with it (plan/settings.py)."""
        return _in_elements(self.zero3_window_blocks, block_numel)

    def zero3_sub_group(self, block_numel: int) -> int | None:
        """Elements of ZeRO-3's optimizer sub-groups (None: DeepSpeed's default), as train and plan set it."""
        return _in_elements(self.zero3_sub_group_blocks, block_numel)

    def validate(self, where: str = "deepspeed") -> None:
        check(self.zero_stage in (0, 1, 2, 3), f"{where}.zero_stage", self.zero_stage, "must be 0, 1, 2 or 3")
        check(self.pipeline_stages >= 1, f"{where}.pipeline_stages", self.pipeline_stages, "must be >= 1")
        check(self.pipeline_stages == 1 or self.zero_stage <= 1, f"{where}.zero_stage", self.zero_stage,
              "DeepSpeed pipeline parallelism supports ZeRO stage 0 or 1 only")
        check(self.reduce_bucket_size > 0, f"{where}.reduce_bucket_size", self.reduce_bucket_size, "must be positive")
        for name in ("grad_accum_dtype", "communication_dtype"):
            check(getattr(self, name) in REDUCE_DTYPES, f"{where}.{name}", getattr(self, name),
                  f"expected one of {REDUCE_DTYPES}")
        check(self.zero3_window_blocks >= 0, f"{where}.zero3_window_blocks", self.zero3_window_blocks,
              "must be >= 0 (0 keeps DeepSpeed's defaults)")
        check(self.zero3_sub_group_blocks >= 0, f"{where}.zero3_sub_group_blocks", self.zero3_sub_group_blocks,
              "must be >= 0 (0 keeps DeepSpeed's default)")
        check(self.timeout_minutes >= 0.5, f"{where}.timeout_minutes", self.timeout_minutes,
              "must be at least 0.5: the ranks' first meeting waits this long for every rank to start (1e-9 failed "
              "it at once)")
        stage = extra_value(self.extra, "zero_optimization.stage", self.zero_stage)
        check(stage == self.zero_stage, f"{where}.extra.zero_optimization.stage", stage,
              f"differs from {where}.zero_stage={self.zero_stage}, which checkpoints, resume and plan read: set "
              f"{where}.zero_stage={stage} instead")
        for key, owner in TYPED_EXTRA.items():
            value = extra_value(self.extra, key)
            check(value is ABSENT, f"{where}.extra.{key}", value,
                  f"train sets this DeepSpeed key from {owner.format(where=where)}; set it there instead, where plan "
                  "and run.json see it")


WANDB_PROJECT_FORBIDDEN = "/\\#?%:"
"""Characters wandb refuses in a project name."""


@dataclass
class LoggerConfig:
    mode: str = "offline"
    """wandb mode: offline (default; `wandb sync` later), online, or disabled."""
    project: str = "megadalle"
    """wandb project the run is logged under."""
    entity: str | None = None
    """wandb team or user owning the project; null = the logged-in user's default."""
    name: str | None = None
    """Run name shown in wandb; null = the run directory's last two parts (`transformer/default`,
    `dvae/slurm-1234`): wandb's own choice (random words) said nothing of which run it was."""
    peak_tflops: float = 989.0
    """Dense peak TFLOP/s of one device in the training precision, the MFU denominator (H100 SXM bf16 = 989)."""

    def validate(self, where: str = "logger") -> None:
        check(self.mode in WANDB_MODES, f"{where}.mode", self.mode, f"expected one of {WANDB_MODES}")
        check(self.peak_tflops > 0, f"{where}.peak_tflops", self.peak_tflops, "must be positive")
        # wandb's own rule for project names, which it applied only once the run had started
        project = str(self.project)
        bad = "".join(sorted(set(project) & set(WANDB_PROJECT_FORBIDDEN)))
        check(not bad, f"{where}.project", project, f"wandb refuses {bad!r} in a project name (any of "
                                                     f"{WANDB_PROJECT_FORBIDDEN})")
        check(0 < len(project.strip()) and len(project) <= 128, f"{where}.project", project,
              "wandb takes a project name of 1 to 128 characters")


def check_bf16_layout(ds: DeepSpeedConfig, where: str = "deepspeed") -> None:
    """Refuse a bf16 run that DeepSpeed 0.19.8 cannot lay out: fp32 gradient accumulation picks its BF16_Optimizer
    under ZeRO-1 and pipelines and the ZeRO-2/3 optimizer's own fp32 buffers (engine._do_optimizer_sanity_check),
    and stage 0 has no optimizer for that mix. One rule for `train` (its preflight, where the precision is known
    before a process group starts, and the engine) and `plan`, which said "fits" of a config `train` refused."""
    check(ds.zero_stage != 0 or ds.grad_accum_dtype != "fp32", f"{where}.grad_accum_dtype", ds.grad_accum_dtype,
          f"DeepSpeed cannot accumulate bf16 gradients in fp32 at {where}.zero_stage=0; use zero_stage>=1 or "
          f"{where}.grad_accum_dtype=bf16")


SCHEMAS = {"trainer": TrainerConfig, "deepspeed": DeepSpeedConfig, "logger": LoggerConfig}


@dataclass
class RunConfig:
    """Verb-level keys shared by the training verbs (top of conf/train.yaml)."""

    name: str | None = None
    """The run's name: its directory is <out_dir>/<task>/<name>, so rerunning the same command resumes it;
    null = `default`, or `slurm-<job id>` inside a Slurm job (a requeued job keeps its id)."""
    run_dir: str | None = None
    """The run's directory, overriding <out_dir>/<task>/<name>. A rerun whose config differs from the
    directory's run.json is refused, except in the keys megadalle.train.rundir.RESUMABLE lists
    (trainer.steps, moved data, logging, checkpoint cadence, loader workers...)."""
    seed: int = 0
    """The root seed (conf/config.yaml): each stage derives its initialisation, data order and random draws from it,
    so the same seed, data and config give the same run."""
    new_data: bool = False
    """Resume on data other than the checkpoint's (its fingerprint differs: a folder img2dataset has since added
    shards to, shards replaced): false refuses, since step N of other data is not where the run stopped; true goes
    on from step N (weights, optimizer, schedule) reading the data as it is now, in a new order, so some samples
    repeat and others come later. The data's seed, shuffling and the global batch must still be the run's."""
    resume: str = "auto"
    """auto: the newest complete checkpoint of run_dir (the one `latest` names, else the newest complete one
    before it); a fresh start where no save ever finished, an error where one did and none is usable. never:
    start fresh (refused when run_dir already holds checkpoints). Or the path of a checkpoints/step_*
    directory: going back, the later checkpoints move to checkpoints/abandoned/ at the first save; once the run
    has saved past it, the same command continues from the newest checkpoint (a Slurm requeue repeats it), even
    where that directory is pruned by then."""

    def validate(self, where: str = "") -> None:
        from pathlib import Path

        check_seed(where, self.seed)
        key = f"{where}.resume" if where else "resume"
        check(self.resume in ("auto", "never") or Path(self.resume).parent.is_dir(), key, self.resume,
              "expected auto, never or a checkpoint directory (<run>/checkpoints/step_N)")
