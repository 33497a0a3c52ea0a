"""The generic training loop: any Task, any DeepSpeed layout, resumable bit for bit.

`train(task, ...)` starts distributed (from the launcher's environment), picks the run directory
(rank 0), builds the engine, resumes from the newest complete checkpoint, then runs updates until
`trainer.steps`, saving every `checkpoint_every` updates, at the end, and when SIGUSR1/SIGTERM
arrives (then it stops after the save). A stop signal during the start-up stops every rank at the
start-up's next stage, before the first update, with nothing to save (`Trainer._stop_point`).
The data position is the update index: batches come from `task.batches(start_step, part)`, so
resuming needs no seeking (data_identity.py refuses a resume on other data). What the loop drives has
modules of its own: choosing, saving and loading checkpoints (checkpoint*.py) and how a run ended (result.py).

An update whose gradients are not finite is skipped by DeepSpeed's ZeRO optimizer (stages 1-3:
no weight or schedule change) and counted in the logged `skipped_steps`; stage 0 has no such
check, so a non-finite loss there stops the run instead of training on NaN weights.
"""
from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from megadalle.config.train import DeepSpeedConfig, LoggerConfig, TrainerConfig
from megadalle.data import atomic
from megadalle.models.norm import layer_norm_kind
from megadalle.train import (checkpoint_choice, checkpoint_load, checkpoint_save, cpu_malloc, disk_full, distributed,
                             engine as engine_lib, media, rng, rundir, schedule, universal)
from megadalle.train.callbacks import Callback, RunInfo, end_all
from megadalle.train.checkpoint import CheckpointError, one_line
from megadalle.train.console import Console
from megadalle.train.data_identity import check_data_identity, check_same_data
from megadalle.train.ema import EMA
from megadalle.train.ema_swap import ema_weights
from megadalle.train.lineage import Lineage
from megadalle.train.param_edit import ParamEditor
from megadalle.train.result import Result, StoppedBeforeFirstUpdate
from megadalle.train.signals import StopFlag, forget_late_copies, run_flag
from megadalle.train.speed import Speed, reset_peak_memory
from megadalle.train.steps import StepRunner
from megadalle.train.task import VALIDATION_SEED, DataPart, Task
from megadalle.train.universal import Layout
from megadalle.train.validate import Validator
from megadalle.train.wandb_log import Wandb


@dataclass
class RunOptions:
    """Verb-level choices: where the run lives, how it resumes, its seed, what to record."""

    out_dir: str = "outputs"
    run_dir: str | None = None
    """Explicit run directory; None = `<out_dir>/<task>/<name>` chosen by rank 0 (megadalle.train.rundir)."""
    name: str | None = None
    """The run's name in the default directory; None = `default` (`slurm-<job id>` inside a Slurm job)."""
    resume: str = "auto"
    """auto, never, or the path of a step_* directory (config.train.RunConfig.resume says what each does)."""
    seed: int = 0
    new_data: bool = False
    """Resume on data whose fingerprint differs from the checkpoint's (config.train.RunConfig.new_data)."""
    config: dict = field(default_factory=dict)
    """The full config, saved as run.json with `task_factory` so `megadalle export` can rebuild the model (and
    the sha256 of its tokenizer, `rundir.digests`)."""
    task_factory: str | None = None
    """`module:function` that rebuilds the task from `config` (used by export)."""
    verb: str = "train"
    """The verb running it (train, train-dvae, train-clip): its console lines say `[<verb>]`."""


class Trainer:
    """One run: set up (engine, resume, callbacks) in __init__, then `fit()`. Rank 0 holds the run directory's
    lock (rundir.RunLock) from before the resume until `fit()` ends, or until __init__ fails. `stop` holds USR1 and
    TERM from the start (signals.run_flag); `fit()` gives the stop signals back."""

    def __init__(self, task: Task, trainer: TrainerConfig, ds: DeepSpeedConfig, logger: LoggerConfig,
                 run: RunOptions, stop: StopFlag, extra_callbacks: list[Callback] | None = None):
        self.task, self.cfg, self.ds, self.stop = task, trainer, ds, stop
        self.step: int | None = None
        self.failure: str | None = None
        """A run file rank 0 could not write, in one line (`_tell`): every rank stops on it (`_stopping`)."""
        self.env = distributed.detect()
        self.verb = run.verb
        if self.env.rank == 0 and (warning := schedule.warmup_warning(trainer)):
            print(f"{self.prefix} warning: {warning}", file=sys.stderr, flush=True)
        distributed.init(self.env, ds.timeout_minutes)
        self.run_dir, self.lock = rundir.choose(run.run_dir, run.out_dir, task.name, self.env.rank, run.name)
        try:
            self._set_up(task, trainer, ds, logger, run, extra_callbacks)
        except BaseException:
            self.lock.release()
            raise

    def _set_up(self, task: Task, trainer: TrainerConfig, ds: DeepSpeedConfig, logger: LoggerConfig,
                run: RunOptions, extra_callbacks: list[Callback] | None) -> None:
        """Everything after the run directory is locked: the engine, the resume, the callbacks; a stop signal ends
        it between its stages (`_stop_point`)."""
        self._stop_point()
        reset_peak_memory()  # this run's peak, its build included (speed.py)
        self.ckpt_root = self.run_dir / "checkpoints"
        dp_world = max(1, self.env.world_size // ds.pipeline_stages)
        self.layout = Layout(dp_world, ds.pipeline_stages, ds.zero_stage,
                             global_batch=trainer.micro_batch * trainer.grad_accum * dp_world,
                             micro_batch=trainer.micro_batch)
        chosen, universal_dir = self._choose_checkpoint(run)
        self._stop_point()
        if trainer.keep_freed_memory and not torch.cuda.is_available():
            cpu_malloc.keep_freed_memory()
        rng.seed_all(run.seed)  # identical initial weights on every rank
        self.built = engine_lib.build(task, trainer, universal.loading_config(ds) if universal_dir else ds,
                                      self.env.world_size)
        self._stop_point()
        self.ema = self._ema(trainer.ema)
        self.editor = ParamEditor(self.built.engine, ds.zero_stage, self.ema)
        self.part = DataPart(trainer.micro_batch, trainer.grad_accum, self.built.dp_rank, self.built.dp_world)
        state = self._resume(run, chosen, universal_dir)
        self.step = int(state.get("step", 0))
        self._stop_point()
        self.samples_seen = int(state.get("samples_seen", 0))
        self.nonfinite = int(state.get("nonfinite_losses", 0))
        recorded = self._write_run_json(run)
        self.wandb = Wandb(logger)
        speed = Speed(self.part.global_batch, task.tokens_per_sample(), task.flops_per_sample(self.built.model),
                      logger.peak_tflops, self.env.world_size)
        self.callbacks: list[Callback] = [speed, Console(run.verb), self.wandb, media.MediaFiles(),
                                          *(extra_callbacks or [])]
        self.validator = Validator(task, self.built, self.part, trainer.eval_every, trainer.eval_batches, VALIDATION_SEED,
                                   self.prefix)
        self.info = RunInfo(self.run_dir, self.env.rank, self.env.world_size, self.step, trainer.steps,
                            self._logged_config(recorded), state.get("wandb_id"))

    def _write_run_json(self, run: RunOptions) -> dict:
        """Rank 0 records the config the run goes on under (a resume may have changed what RESUMABLE allows), its paths
        absolute (rundir.recorded), a dVAE that a rerun leaves unset as recorded (rundir.kept_when_unset), and the
        optimizer and LayerNorm it runs (apex's or torch's: the config does not say), which it also prints; a disk
        that does not take it stops every rank with one line (disk_full). Returns what it recorded ({} on the other
        ranks)."""
        failure, recorded = None, {}
        if self.env.rank == 0:
            kernels = {"optimizer": engine_lib.optimizer_kind(self.built.engine.optimizer),
                       "layer_norm": layer_norm_kind(self.built.model)}
            print(f"{self.prefix} optimizer: {kernels['optimizer']}, layer_norm: {kernels['layer_norm']}", flush=True)
            path = self.run_dir / "run.json"
            config = rundir.kept_when_unset(path, rundir.recorded(run.config))
            recorded = {"task_factory": run.task_factory, "config": config,
                        "sha256": rundir.recorded_digests(run.config), "kernels": kernels}
            failure = disk_full.attempt(partial(atomic.write_bytes, path, json.dumps(
                recorded, indent=1, default=str).encode()), path)
        disk_full.stop_every_rank(failure)
        return recorded

    def _logged_config(self, recorded: dict) -> dict:
        """wandb's config: run.json's (absolute paths, the tokenizer's and dVAE's digests) and the layout, which the
        config as typed does not tell (a run on 1 and on 8 GPUs looked the same)."""
        return {**recorded.get("config", {}), "sha256": recorded.get("sha256", {}),
                "layout": {"world_size": self.env.world_size, **dataclasses.asdict(self.layout)}}

    def _stop_point(self) -> None:
        """Between two stages of the start-up (each can take minutes at 12B: converting or loading a checkpoint,
        building the engine): when a stop signal has reached any rank, every rank stops here together, before the
        first update. Nothing is trained since the last checkpoint, so nothing is saved."""
        if distributed.any_rank(self.stop.set):
            raise StoppedBeforeFirstUpdate(self.run_dir, self.step, self.env.rank, self.verb)

    @property
    def prefix(self) -> str:
        """What the run's console lines start with: `[<verb>]`."""
        return f"[{self.verb}]"

    def _ema(self, decay: float | None) -> EMA | None:
        """This rank's share of the EMA: its stage's parameters (plain-model names), its data-parallel piece."""
        if decay is None:
            return None
        draws = self.cfg.media_every and type(self.task).media is not Task.media  # CLIP draws nothing
        scored = " and ".join(what for what, due in (("val/ metrics", self.cfg.eval_every), ("media", draws)) if due)
        if self.env.rank == 0 and scored:
            print(f"{self.prefix} {scored} are of the EMA weights (trainer.ema={decay}), those export ships",
                  flush=True)
        return EMA(self._trained_params(), decay, self.built.dp_rank, self.built.dp_world)

    def _trained_params(self) -> list[tuple[str, torch.nn.Parameter]]:
        """The parameters this rank trains, under their plain-model names.

        A PipelineModule registers layer i as sub-module `str(i)`; its parameter `i.key` is
        `layer_names[i].key` (`PipelineSpec.layer_names`, the plain sub-module path of each layer).
        Otherwise the engine's parameters are the plain model's own, matched by identity.
        """
        engine_params = list(self.built.engine.module.named_parameters())
        if self.built.pipeline is not None:
            layer_names = self.built.pipeline.layer_names
            return [(f"{layer_names[int(name.split('.', 1)[0])]}.{name.split('.', 1)[1]}", param)
                    for name, param in engine_params]
        trained = {id(p) for _, p in engine_params}
        return [(name, p) for name, p in self.built.model.named_parameters() if id(p) in trained]

    def _choose_checkpoint(self, run: RunOptions) -> tuple[Path | None, Path | None]:
        """The checkpoint to resume from (rank 0 picks it) and, when it was saved by another data-parallel
        size, its universal form: rank 0 converts it once while the others wait on the file system, outside
        any collective (its timeout would end them during a long conversion; see universal.py). Rank 0 refuses one
        whose objective the layout would change (universal.keep_objective) and says when the learning rate moves at it
        (schedule.schedule_warning)."""
        chosen, conversion, error, failure = None, False, None, None
        self.next_save = Lineage()
        """The lineage of this run's next checkpoint (checkpoint_choice.choose, then each save's); rank 0's is
        recorded."""
        if self.env.rank == 0:
            try:
                found, self.next_save = checkpoint_choice.choose(run.resume, self.ckpt_root)
                saved = Layout.saved(found) if found is not None else None
                if saved is not None:
                    universal.keep_objective(saved, self.layout, found, rundir.flatten(run.config))
                conversion = found is not None and universal.needs_conversion(saved, self.layout, found)
                if conversion:
                    universal.clear_stale(found, owned=found.resolve().is_relative_to(self.run_dir))
                chosen = str(found) if found else None
            except CheckpointError as err:
                error = str(err)
            except Exception as err:  # a bug: rank 0 keeps its traceback, the others stop with its first line
                failure, error = err, f"rank 0 failed to choose the checkpoint: {one_line(err)}"
        chosen, conversion, error = distributed.broadcast_object((chosen, conversion, error))
        if failure is not None:
            raise failure
        if error is not None:  # every rank stops with the same one-line reason, none waits forever
            raise CheckpointError(error)
        if chosen is None:
            return None, None
        if self.env.rank == 0 and (warning := schedule.schedule_warning(self.run_dir, Path(chosen), self.cfg)):
            print(f"{self.prefix} warning: {warning}", file=sys.stderr, flush=True)
        if not conversion:
            return Path(chosen), None
        if self.env.rank == 0:  # None: a stop signal ended the conversion, and the next _stop_point stops every rank
            return Path(chosen), universal.convert(Path(chosen), lambda: self.stop.set)
        return Path(chosen), universal.wait_for(Path(chosen))

    def _resume(self, run: RunOptions, chosen: Path | None, universal_dir: Path | None) -> dict:
        """Load the chosen checkpoint (all ranks), check the data. Each rank's generators are seeded
        apart first (dropout differs per rank); a checkpoint's saved states then replace them."""
        self.data_identity = self.task.data_identity(self.part)
        check_same_data(self.data_identity)
        rng.seed_all(run.seed + 1 + self.env.rank)
        if chosen is None:
            return {}
        state = checkpoint_load.load(self.built.engine, chosen, self.env.rank, self.ema, universal_dir)
        if universal_dir is not None and self.layout.zero_stage == 3:
            universal.repair_zero3_optimizer(self.built.engine.optimizer, universal_dir)
        check_data_identity(state.get("data_identity"), self.data_identity, chosen, run.new_data, self.env.rank,
                            self.prefix)
        self.task.load_state(state.get("task_state", {}))
        print(f"{self.prefix} rank {self.env.rank} resumed from {chosen} at step {state['step']}", flush=True)
        return state

    def client_state(self) -> dict:
        """What a checkpoint records beside DeepSpeed's own state."""
        return {"step": self.step, "samples_seen": self.samples_seen, "data_step": self.step,
                "data_identity": self.data_identity, "wandb_id": self.wandb.run_id,
                "world_size": self.env.world_size, "nonfinite_losses": self.nonfinite,
                "layout": dataclasses.asdict(self.layout), "schedule": schedule.schedule_of(self.cfg),
                "task_state": self.task.state()}

    def fit(self) -> Result:
        """The updates. Whatever ends them, every callback's end() runs and the run lock is released (an in-process
        caller, the demo, goes on after a failed run)."""
        losses: list[float] = []
        stop = self.stop.install((signal.SIGINT,), self.prefix)  # Ctrl-C checkpoints from here; before, it interrupts
        stopped, failing, skipped = False, True, []
        try:
            self._say_if_past_steps()
            runner = StepRunner(self.task, self.built, self.part, self.step)
            self._tell("start", self.info)
            disk_full.stop_every_rank(self.failure)
            while self.step < self.cfg.steps and not stopped:
                metrics = self._update(runner)
                losses.append(metrics["loss"])
                skipped = self._report(metrics, stop)
                self.step += 1
                stopped = self._stopping(stop)
                periodic = self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0
                if stopped or periodic or self.step == self.cfg.steps:
                    self.next_save = checkpoint_save.save(self.built.engine, self.ckpt_root, self.step,
                                                          self.client_state(), self.env.rank, self.next_save, self.ema,
                                                          self.cfg.keep_checkpoints)
            failing = False
        finally:
            stop.uninstall(stopped)
            try:
                end_all(self.callbacks, failing, stopped, self.prefix)
            finally:
                self.lock.release()
        if stopped:  # once the stop flag is given back: a Ctrl-C now is not one "saving after this update"
            print(f"{self.prefix} rank {self.env.rank}: stop signal, checkpoint saved at step {self.step}"
                  + (f" (the {' and '.join(skipped)} due at this update skipped, to save sooner)" if skipped else ""),
                  flush=True)
        return Result(self.run_dir, self.step, stopped, losses, self.env.rank, self.verb, self.built.engine,
                      self.built.model)

    def _say_if_past_steps(self) -> None:
        """Rank 0 says once that the checkpoint resumed is past `trainer.steps`: a rerun asking fewer steps than the
        run has done trains nothing and keeps its weights, which run.json's smaller trainer.steps hid."""
        if self.env.rank == 0 and self.step > self.cfg.steps:
            print(f"{self.prefix} warning: the checkpoint at step {self.step} is past trainer.steps={self.cfg.steps}: "
                  f"nothing to train, its weights of step {self.step} are used", file=sys.stderr, flush=True)

    def _tell(self, method: str, *args) -> None:
        """`method` of every callback. A run file one cannot write (a full disk, disk_full) is kept in `self.failure`
        and the other callbacks still run: every rank stops on it together at `_stopping`, after this update's
        collectives (a validation, media), in which rank 0 leaving alone would leave the others waiting."""
        for callback in self.callbacks:
            failure = disk_full.attempt(partial(getattr(callback, method), *args))
            self.failure = self.failure or failure

    def _stopping(self, stop: StopFlag) -> bool:
        """Whether every rank stops after this update: a stop signal reached one (it is saved). A run file rank 0
        could not write (`self.failure`) stops them all with its line instead; one all-reduce serves both."""
        flagged = distributed.any_rank(stop.set or self.failure is not None)
        if flagged:
            disk_full.stop_every_rank(self.failure)
        return flagged

    def _update(self, runner: StepRunner) -> dict[str, float]:
        """One optimizer update plus its bookkeeping metrics."""
        lr = self.built.engine.get_lr()[0]
        began = time.perf_counter()
        metrics = runner.update(self.step)
        metrics.update(self.task.after_update(self.built.model, self.editor, self.step))
        if self.ema is not None:
            self.ema.update(self.step)
        metrics["step_seconds"] = time.perf_counter() - began
        self.samples_seen += self.part.global_batch
        if not math.isfinite(metrics["loss"]):
            self.nonfinite += 1
            if self.ds.zero_stage == 0:
                raise FloatingPointError(f"non-finite loss at step {self.step} with deepspeed.zero_stage=0, which "
                                         "cannot skip the update; resume from the last checkpoint (ZeRO 1-3 skip it)")
        metrics.update(lr=lr, samples_seen=self.samples_seen, nonfinite_losses=self.nonfinite,
                       skipped_steps=float(getattr(self.built.engine, "skipped_steps", 0)))
        return metrics

    def _report(self, metrics: dict[str, float], stop: StopFlag) -> list[str]:
        """The update's metrics to the callbacks, with its validation and media when due: both of the EMA weights
        when the run keeps an EMA (the weights export ships), swapped in once for both (ema_swap.py). Returns what
        was due but skipped: on an update after which the run stops for a signal (on any rank), neither runs. They
        come before the save, and at 12B a sample grid gathers the whole model and decodes captions for minutes,
        which the time-limit warning's lead (one update plus the checkpoint, plan's USR1 lead) does not cover."""
        step = self.step
        validated = self.validator.due(step) and bool(self.validator.batches())
        drawn = bool(self.cfg.media_every) and (step + 1) % self.cfg.media_every == 0
        skipped = []
        if (validated or drawn) and distributed.any_rank(stop.set):  # only then: an all-reduce the update spares
            skipped = [name for name, due in (("validation", validated), ("sample grid", drawn)) if due]
            validated = drawn = False
        pictures = {}
        if validated or drawn:
            with ema_weights(self.ema, self.built.dp_group):
                if validated:
                    metrics.update(self.validator.run(step))
                if drawn:
                    pictures = media.collect(self.task, self.built, step, self.env.rank)
        self._tell("step", step, metrics)
        if validated or (step + 1) % self.cfg.log_every == 0 or step + 1 == self.cfg.steps:
            self._tell("log", step, metrics)
        if drawn:
            self._tell("media", step, pictures)
        return skipped


def train(task: Task, trainer: TrainerConfig, ds: DeepSpeedConfig, logger: LoggerConfig, run: RunOptions,
          extra_callbacks: list[Callback] | None = None) -> Result:
    """Train `task` to `trainer.steps` updates (resuming if the run has checkpoints); see the module docstring.
    Called in-process (not by a verb's command), the stop signals' handlers are as they were when it returns
    (signals.forget_late_copies); a verb keeps ignoring their late copies until its command ends."""
    stop = run_flag()
    try:
        with engine_lib.functional_linear_kept():
            return Trainer(task, trainer, ds, logger, run, stop, extra_callbacks).fit()
    except StoppedBeforeFirstUpdate as early:
        stop.uninstall(stopped=True)
        return early.result
    finally:
        stop.uninstall()  # after a failed start-up; fit() gave them back already
        forget_late_copies()


def train_from_config(task: Task, cfg, task_factory: str | None = None, verb: str = "train") -> Result:
    """`train` with the shared keys of a training verb's composed config: the `trainer`, `deepspeed`
    and `logger` groups plus top-level `seed`, `out_dir`, `run_dir`, `name` and `resume` (the last three optional).
    This is what `train`, `train-dvae` and `train-clip` call from their `run(cfg)`, each under its name (`verb`)."""
    from megadalle.config import build, container_with, top_level
    from megadalle.config.train import RunConfig

    keys = build(RunConfig, top_level(cfg, RunConfig), "")
    checkpoint_load.check_resumed_model(task, keys.resume)
    run = RunOptions(out_dir=str(cfg.get("out_dir", "outputs")), run_dir=keys.run_dir, name=keys.name,
                     resume=keys.resume, seed=keys.seed, new_data=keys.new_data,
                     config=container_with(cfg, keys), task_factory=task_factory, verb=verb)
    return train(task, build(TrainerConfig, cfg.trainer, "trainer"), build(DeepSpeedConfig, cfg.deepspeed, "deepspeed"),
                 build(LoggerConfig, cfg.logger, "logger"), run)
