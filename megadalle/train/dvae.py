"""`megadalle train-dvae`: the discrete VAE on image shards, through the generic trainer.

The task reads DATA's step-indexed image loader and optimises the negative ELB at the step's
KL weight β and Gumbel temperature τ (pure functions of the update index, so a resumed run
continues on the same curves). It reports codebook use, which a dVAE can silently lose: the
perplexity of each micro-batch's argmax codes and the codes unused over the last `usage_window`
updates (per rank). Reconstructions (input row above argmax-code row) go to wandb as an image.
At the end, rank 0 writes the weights for users (the EMA when the trainer keeps one).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import DictConfig, OmegaConf

from megadalle.config import build, check, top_level
from megadalle.config.data import DataConfig
from megadalle.config.dvae import DVAEConfig, TrainDVAEConfig
from megadalle.data.ingest import open_index
from megadalle.models.dvae import DVAE
from megadalle.models.dvae_loss import codebook_perplexity, elbo_loss, kl_weight, temperature
from megadalle.train.media import Picture
from megadalle.train.task import Batch, DataPart, ExportSpec, Task, rank_batches, validation_data

FACTORY = "megadalle.train.dvae:task_from_config"


class CodeUsage:
    """Step at which each code was last the argmax of some grid cell; dead = unused for `window` updates."""

    def __init__(self, vocab: int, window: int):
        self.window = window
        self.last_seen: torch.Tensor | None = None
        self.vocab = vocab

    def update(self, codes: torch.Tensor, step: int) -> int:
        """Record a micro-batch's codes at `step`; returns the number of dead codes."""
        if self.last_seen is None:
            self.last_seen = torch.full((self.vocab,), step, dtype=torch.long)
        self.last_seen[codes.unique().cpu()] = step
        return int((step - self.last_seen >= self.window).sum())


class DVAETask(Task):
    name = "dvae"

    def __init__(self, cfg: DVAEConfig, data: DataConfig | None, seed: int = 0, usage_window: int = 100,
                 preview: int = 8):
        self.cfg, self.data, self.seed, self.preview = cfg, data, seed, preview
        self.usage = CodeUsage(cfg.vocab_size, usage_window)
        self._last_images: torch.Tensor | None = None

    def build_model(self) -> DVAE:
        return DVAE(self.cfg)

    def batches(self, start_step: int, part: DataPart) -> Iterator[Batch]:
        if self.data is None:
            raise ValueError("DVAETask built without a data config cannot produce batches")
        for batch in rank_batches(self.data, part, self.seed, start_step, image_size=self.cfg.image_size):
            yield {"image": batch["image"]}

    def validation_batches(self, part: DataPart) -> Iterator[Batch] | None:
        val = validation_data(self.data)
        if val is None:
            return None
        return ({"image": b["image"]} for b in rank_batches(val, part, self.seed, 0, image_size=self.cfg.image_size))

    def loss(self, model: DVAE, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        loss, metrics, codes = self._elbo(model, batch["image"], step)
        metrics["dead_codes"] = float(self.usage.update(codes, step))
        self._last_images = batch["image"][: self.preview].detach()
        return loss, metrics

    def validation_loss(self, model: DVAE, batch: Batch, step: int) -> dict[str, float]:
        """The ELBO at the step's β and τ, without touching the training code-usage record or the preview."""
        loss, metrics, _ = self._elbo(model, batch["image"], step)
        return {"loss": float(loss), **metrics}

    def _elbo(self, model: DVAE, images: torch.Tensor, step: int):
        """(loss, metrics, argmax codes) of a micro-batch at the step's KL weight and temperature."""
        objective = self.cfg.objective
        tau = temperature(step, objective)
        logits, stats = model(images, tau)
        loss, metrics = elbo_loss(images, logits, stats, kl_weight(step, objective), self.cfg.eps,
                                  objective.usage_weight, tau)
        codes = logits.detach().argmax(dim=1)
        metrics.update(tau=tau, perplexity=codebook_perplexity(codes, self.cfg.vocab_size))
        return loss, metrics, codes

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
    from megadalle.config.train import RunConfig
    from megadalle.train.consolidate import export
    from megadalle.train.loop import train_from_config

    verb = build(TrainDVAEConfig, top_level(cfg, TrainDVAEConfig), "")
    build(RunConfig, {"run_dir": verb.run_dir, "resume": verb.resume}, "")
    task = task_from_config(cfg)
    check(task.data is not None, "data", None, "train-dvae needs image shards: set data.shards")
    open_index(task.data.shards, "data.shards")  # tars written elsewhere are indexed here, once; else one-line error
    result = train_from_config(task, cfg, FACTORY)
    print(f"[train-dvae] {'stopped by signal' if result.stopped_by_signal else 'finished'} at step {result.step}; "
          f"run directory {result.run_dir}")
    if result.stopped_by_signal or int(getattr(result.engine, "global_rank", 0)) != 0:
        return None
    ema = cfg.trainer.get("ema") is not None
    # encode reads these weights: keep the precision the dVAE trained in
    path = export(result.run_dir, verb.weights or result.run_dir / "dvae.safetensors", ema=ema, dtype="fp32")
    print(f"[train-dvae] weights{' (EMA)' if ema else ''}: {path} + {path.with_suffix('.json').name}")
    return path


def run(cfg: DictConfig) -> int:
    train_dvae(cfg)
    return 0
