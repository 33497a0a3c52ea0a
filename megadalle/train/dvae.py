"""`megadalle train-dvae`: the discrete VAE on image shards, through the generic trainer.

The task reads DATA's step-indexed image loader and optimises the negative ELB at the step's
KL weight β and Gumbel temperature τ (pure functions of the update index, so a resumed run
continues on the same curves; their lengths are the objective's, and a run that ends before them is
warned at its first update, not again when it resumes: DVAETask.schedule_warning). It reports codebook use,
which a dVAE can silently lose, from the histogram of each update's argmax codes over all its micro-batches and
ranks (UpdateCodes): their perplexity and the codes no cell chose in the last `usage_window` updates (CodeUsage),
and with `objective.revive_every` revives dead codes (CodeRevival).
Reconstructions (input row above argmax-code row) of the last `preview` images trained on go to wandb as an image.
At the end, rank 0 writes the weights for users (the EMA when the trainer keeps one), which `encode` finds from the
run directory (train/dvae_export.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch
from omegaconf import DictConfig, OmegaConf

from megadalle.config import build, check, top_level
from megadalle.config.data import DataConfig
from megadalle.config.dvae import DVAEConfig, TrainDVAEConfig
from megadalle.models.dvae import DVAE
from megadalle.models.dvae_loss import (elbo_loss, histogram_perplexity, kl_weight, temperature,
                                        unfinished_schedules)
from megadalle.seeds import derived_seed
from megadalle.train.distributed import ranks, world_size
from megadalle.train.dvae_export import RUN_WEIGHTS, record_export
from megadalle.train.media import Picture
from megadalle.train.param_edit import ParamEditor
from megadalle.train.task import (Batch, DataPart, ExportSpec, ShardsTask, held_out_batches, loader_metrics,
                                  rank_batches, validation_data)
from megadalle.warn import warn

if TYPE_CHECKING:
    from megadalle.train.result import Result

FACTORY = "megadalle.train.dvae:task_from_config"
SCHEDULED = ("tau", "beta")
"""The step's schedule values among the ELBO's metrics: the training's curves, not validation's results (no val/tau)."""


class UpdateCodes:
    """The histogram of one update's argmax codes (or a validation subset's): counted over its micro-batches, summed
    over the ranks.

    Codebook metrics describe the codes the update chose as a whole. A micro-batch's perplexity grows with its
    size (a uniformly used 8192-code codebook reads about 2982 on 4 x 1024 cells, 4618 on 8 x 1024, 8127 on the
    paper's update of 512 x 1024), so a mean over micro-batches would change with micro_batch and grad_accum;
    and a code that only another rank's cells chose is in use, not dead. The dVAE never runs pipelined, so its
    data-parallel group is every rank.
    """

    def __init__(self, vocab: int):
        self.vocab = vocab
        self._counts: torch.Tensor | None = None

    def observe(self, codes: torch.Tensor) -> None:
        """Count a micro-batch's argmax codes (on their device, until `collect`)."""
        counts = torch.bincount(codes.flatten(), minlength=self.vocab)
        self._counts = counts if self._counts is None else self._counts + counts

    def collect(self, device: torch.device) -> torch.Tensor:
        """The update's counts summed over ranks (on the CPU), and a fresh histogram for the next update.

        A collective when several ranks run: every rank calls it once after every update. The counts stay on
        the codes' device for it (NCCL reduces only GPU tensors); `device` serves a rank that observed nothing."""
        counts = self._counts if self._counts is not None else torch.zeros(self.vocab, dtype=torch.long,
                                                                             device=device)
        self._counts = None
        if world_size() > 1:
            torch.distributed.all_reduce(counts)
        return counts.cpu()


class CodeUsage:
    """Update at which each code was last the argmax of some grid cell; dead = unused for `window` updates.

    The record is part of the task's checkpointed state: rebuilt at a resume, every code would count as just
    seen and none as dead for the next `window` updates."""

    def __init__(self, vocab: int, window: int):
        self.window = window
        self.last_seen: torch.Tensor | None = None
        self.vocab = vocab

    def update(self, counts: torch.Tensor, step: int) -> int:
        """Record the histogram of update `step`'s codes (all ranks'); returns the number of dead codes."""
        if self.last_seen is None:
            self.last_seen = torch.full((self.vocab,), step, dtype=torch.long)
        self.last_seen[counts > 0] = step
        return int((step - self.last_seen >= self.window).sum())

    def state(self) -> dict[str, Any]:
        return {} if self.last_seen is None else {"code_last_seen": self.last_seen.clone()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore `state()`; a checkpoint written before it was saved starts the record afresh."""
        if "code_last_seen" in state:
            self.last_seen = state["code_last_seen"].to("cpu", torch.long).clone()


class CodeRevival:
    """Dead codes re-initialised as copies of live ones, which then split the live codes' cells.

    A small dVAE leaves most of its codebook dead: a code that wins no cell gets almost no gradient and
    never starts winning (the usage term narrows the gap but does not close it). Every `every` updates
    each code that was no cell's argmax during them, on any rank, takes a donor drawn among the live
    codes in proportion to their use, as VQ-VAE codebook restarts draw from the encoder's outputs: its
    logit row in the encoder's last conv becomes the donor's plus a little noise, its embedding in the
    decoder's first conv the donor's, and its Adam moments the donor's. A donor with c copies and the
    copies each get the donor's logit bias minus ln(c + 1), so that in every cell they hold together the
    donor's share among the live codes (a dead code's own probability is what is given up); the noise
    decides which of them wins where, and training pulls them apart. Each update's counts come summed over
    ranks (UpdateCodes): identical everywhere, so every rank draws the same donors, and rank 0's checkpoint
    restores them all (a resume between revivals draws what the uninterrupted run drew).
    """

    NOISE = 0.01
    """Noise of a copied logit row, relative to the donor row's standard deviation."""

    def __init__(self, vocab: int, every: int, until: int, seed: int):
        self.every, self.until, self.seed = every, until, seed
        self.counts = torch.zeros(vocab, dtype=torch.long)

    def after_update(self, model: DVAE, editor: ParamEditor, step: int, counts: torch.Tensor) -> int:
        """Fold in `counts`, update `step`'s code histogram over all ranks; at the end of a window revive; returns
        the number of codes revived."""
        if step + 1 > self.until:  # no revival left: the counts would serve nothing
            return 0
        self.counts += counts
        if (step + 1) % self.every:
            return 0
        dead = (self.counts == 0).nonzero().flatten()
        revived = int(dead.numel()) if self.counts.sum() > 0 else 0
        if revived:
            self._revive(model, editor, dead, step)
        self.counts.zero_()
        return revived

    def _revive(self, model: DVAE, editor: ParamEditor, dead: torch.Tensor, step: int) -> None:
        draw = torch.Generator().manual_seed(derived_seed(self.seed, step))
        donors = torch.multinomial(self.counts.double(), dead.numel(), replacement=True, generator=draw)
        shift = torch.log1p(torch.bincount(donors, minlength=self.counts.numel()).double()).float()
        shift[dead] = shift[donors]
        logits, embedding = model.encoder.net[-1], model.decoder.embedding

        def copied(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
            """`t` with each dead code's slice along `dim` (its code axis) replaced by its donor's."""
            return t.index_copy(dim, dead, t.index_select(dim, donors))

        def rows(t: torch.Tensor, which: str) -> torch.Tensor:
            out = copied(t)
            if which == "param":
                out[dead] += self.NOISE * t[donors].std() * torch.randn(out[dead].shape, generator=draw)
            return out

        editor.apply(logits.weight, rows)
        editor.apply(logits.bias, lambda t, which: copied(t) - shift if which == "param" else copied(t))
        editor.apply(embedding.weight, lambda t, which: copied(t, 1))

    def state(self) -> dict[str, Any]:
        return {"code_counts": self.counts.clone()}

    def load_state(self, state: dict[str, Any]) -> None:
        if "code_counts" in state:
            self.counts.copy_(state["code_counts"])


class DVAETask(ShardsTask):
    name = "dvae"

    def __init__(self, cfg: DVAEConfig, data: DataConfig | None, seed: int = 0, usage_window: int = 100,
                 preview: int = 8):
        self.cfg, self.data, self.seed, self.preview = cfg, data, seed, preview
        self.codes, self.val_codes = UpdateCodes(cfg.vocab_size), UpdateCodes(cfg.vocab_size)
        self.usage = CodeUsage(cfg.vocab_size, usage_window)
        objective = cfg.objective
        self.revival = CodeRevival(cfg.vocab_size, objective.revive_every, objective.revive_until, seed) \
            if objective.revive_every else None
        self._last_images: torch.Tensor | None = None
        self.schedule_warning: str | None = None
        """The schedules `trainer.steps` cuts short (models.dvae_loss.unfinished_schedules), set by the verb."""
        self._warned: str | None = None
        """The schedule warning the run gave already, kept in its checkpoints: a resume says it again only when it
        differs (a new trainer.steps), where it repeated on every resume of a long run."""

    def build_model(self) -> DVAE:
        return DVAE(self.cfg)

    def batches(self, start_step: int, part: DataPart) -> Iterator[Batch]:
        if self.data is None:
            raise ValueError("DVAETask built without a data config cannot produce batches")
        for batch in rank_batches(self.data, part, self.seed, start_step, self.shard_index,
                                  image_size=self.cfg.image_size, captions=False):
            yield {"image": batch["image"], "upscaled": batch["upscaled"]}

    def validation_batches(self, part: DataPart) -> Iterator[Batch] | None:
        val = validation_data(self.data)
        if val is None:
            return None
        return ({"image": b["image"]} for b in held_out_batches(val, part, image_size=self.cfg.image_size,
                                                                captions=False))

    def loss(self, model: DVAE, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        loss, metrics, codes = self._elbo(model, batch["image"], step)
        self.codes.observe(codes)
        self._keep_for_preview(batch["image"])
        return loss, {**metrics, **loader_metrics(batch)}

    def _keep_for_preview(self, images: torch.Tensor) -> None:
        """Keep the last `preview` images trained on, across micro-batches (and updates, where one holds fewer): the
        grid used to show the last micro-batch's alone, `micro_batch` images where `preview` asked for more. A copy,
        so that the batch itself is freed."""
        kept = images[-self.preview:].detach()
        if self._last_images is not None and len(kept) < self.preview:
            kept = torch.cat([self._last_images, kept])
        self._last_images = kept[-self.preview:].clone()

    def after_update(self, model: DVAE, editor: ParamEditor, step: int) -> dict[str, float]:
        """The codebook metrics of the update's codes over all ranks (one all-reduce), then any revival. The first
        update's says the schedule warning (rank 0): only then is it known whether the run resumed one that gave it."""
        if self.schedule_warning != self._warned:
            if self.schedule_warning is not None and ranks()[0] == 0:
                warn(self.schedule_warning, "[train-dvae] warning:")  # through tqdm: the progress bar is up
            self._warned = self.schedule_warning
        counts = self.codes.collect(next(model.parameters()).device)
        metrics = {"perplexity": histogram_perplexity(counts), "dead_codes": float(self.usage.update(counts, step))}
        if self.revival is not None:
            metrics["revived_codes"] = float(self.revival.after_update(model, editor, step, counts))
        return metrics

    def state(self) -> dict[str, Any]:
        return {**self.usage.state(), **({} if self.revival is None else self.revival.state()),
                "schedule_warning": self._warned}

    def load_state(self, state: dict[str, Any]) -> None:
        self._warned = state.get("schedule_warning")  # a checkpoint from before it was kept: said again
        self.usage.load_state(state)
        if self.revival is not None:
            self.revival.load_state(state)

    def validation_loss(self, model: DVAE, batch: Batch, step: int) -> dict[str, float]:
        """The ELBO at the step's β and τ, without touching the training code histogram or the preview; the codes
        are counted for the subset's perplexity (`validation_summary`)."""
        loss, metrics, codes = self._elbo(model, batch["image"], step)
        self.val_codes.observe(codes)
        return {"loss": float(loss), **{k: v for k, v in metrics.items() if k not in SCHEDULED}}

    def validation_summary(self, device: torch.device) -> dict[str, float]:
        """The perplexity of the whole validation subset's codes, on all ranks (one all-reduce): the same figure
        whatever micro_batch and the number of ranks, as the training metric is for its update."""
        return {"perplexity": histogram_perplexity(self.val_codes.collect(device))}

    def _elbo(self, model: DVAE, images: torch.Tensor, step: int):
        """(loss, metrics, argmax codes) of a micro-batch at the step's KL weight and temperature."""
        objective = self.cfg.objective
        tau = temperature(step, objective)
        logits, stats = model(images, tau)
        loss, metrics = elbo_loss(images, logits, stats, kl_weight(step, objective), self.cfg.eps,
                                  objective.usage_weight, tau, objective.reconstruction, objective.sigma)
        metrics["tau"] = tau
        return loss, metrics, logits.detach().argmax(dim=1)

    def flops_per_sample(self, model: DVAE) -> float:
        return 3.0 * model.flops_per_image()  # forward + backward (twice the forward)

    def media(self, model: DVAE, step: int) -> dict[str, Any]:
        if self._last_images is None:
            return {}
        grid = reconstruction_grid(model, self._last_images)
        return {"reconstructions": Picture(grid, caption="top: input; bottom: decode(encode(input))")}

    def export_spec(self) -> ExportSpec:
        return ExportSpec("dvae", self.cfg)


@torch.no_grad()
def reconstruction_grid(model: DVAE, images: torch.Tensor):
    """uint8 HWC array: the images in one row, their argmax-code reconstructions below (what the Transformer sees)."""
    recon = model.decode_codes(model.encode(images)).to(images.dtype)
    rows = [torch.cat(list(row.float().clamp(0, 1)), dim=2) for row in (images, recon)]
    return (torch.cat(rows, dim=1).permute(1, 2, 0) * 255).round().byte().cpu().numpy()


def task_from_config(cfg: dict | DictConfig) -> DVAETask:
    """The task of a composed `train-dvae` config (also how `megadalle export` rebuilds a run's dVAE)."""
    cfg = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg
    dvae = build(DVAEConfig, cfg.dvae, "dvae")
    data = build(DataConfig, cfg.data, "data") if cfg.get("data") is not None else None
    check(data is None or not data.tokenizer, "data.tokenizer", data and data.tokenizer,
          "the dVAE reads image shards, not token shards")
    check(data is None or data.image_size in (None, dvae.image_size), "data.image_size", data and data.image_size,
          f"must be null or the dVAE's image_size={dvae.image_size}")
    verb = build(TrainDVAEConfig, top_level(cfg, TrainDVAEConfig), "")
    return DVAETask(dvae, data, verb.seed, verb.usage_window, verb.preview)


def train_dvae(cfg: DictConfig) -> Path | None:
    """Train from a composed `train-dvae` config and export the weights; returns their path on rank 0."""
    return fit_and_export(cfg)[1]


def fit_and_export(cfg: DictConfig) -> tuple[Result, Path | None]:
    """`train_dvae`, with the training's Result beside the weights' path (the verb's exit status needs it)."""
    from megadalle.config.train import RunConfig
    from megadalle.train.final_export import export_finished
    from megadalle.train.loop import train_from_config

    verb = build(TrainDVAEConfig, top_level(cfg, TrainDVAEConfig), "")
    build(RunConfig, {"run_dir": verb.run_dir, "resume": verb.resume}, "")
    task = task_from_config(cfg)
    check(task.data is not None, "data", None, "train-dvae needs image shards: set data.shards")
    task.shard_index  # tars written elsewhere are indexed here, once; else a one-line error
    task.schedule_warning = unfinished_schedules(task.cfg.objective, int(cfg.trainer.steps))
    result = train_from_config(task, cfg, FACTORY, verb="train-dvae")
    result.report()
    if result.stopped_by_signal or result.rank != 0:
        return result, None
    ema = cfg.trainer.get("ema") is not None
    # encode reads these weights: keep the precision the dVAE trained in
    path, written = export_finished(result, Path(verb.weights or result.run_dir / RUN_WEIGHTS), ema)
    if written:
        record_export(result.run_dir, result.step)
    return result, path


def run(cfg: DictConfig) -> int:
    result, _ = fit_and_export(cfg)
    return result.exit_status(int(cfg.trainer.steps))
