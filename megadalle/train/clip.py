"""`megadalle train-clip`: the CLIP reranker on image shards, through the generic trainer.

The task reads DATA's step-indexed image loader (images + one caption line per sample) and
tokenizes the captions with the BPE model the Transformer uses, so CLIP and the Transformer see
the same ids. The contrastive loss gathers features over data-parallel ranks (models/clip.py). With
gradient accumulation (`clip.negatives=update`, the default) each pair is contrasted against the whole
update's batch on every rank, as one batch of micro_batch x grad_accum per rank would be, through gradient
caching (train/grad_cache.py: one more forward per micro-batch); `clip.negatives=micro_batch` contrasts each
micro-batch against the same micro-batch index of every rank only. The validation loss contrasts as many pairs as
training does (train/validate.py). A batch that straddles an epoch can hold a sample twice: the loader names each
row's sample id and the loss leaves the repeat out of the contrast.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch
from omegaconf import DictConfig, OmegaConf

from megadalle.config import build, check, top_level
from megadalle.config.clip import ClipConfig
from megadalle.config.data import DataConfig
from megadalle.models.clip import CLIP, contrastive_loss
from megadalle.train import grad_cache
from megadalle.train.param_edit import ParamEditor
from megadalle.train.task import (Batch, DataPart, ExportSpec, ShardsTask, UpdateRunner, UpdateValidation,
                                  held_out_batches, loader_metrics, rank_batches, validation_data)

if TYPE_CHECKING:
    from megadalle.train.result import Result

FACTORY = "megadalle.train.clip:task_from_config"


class ClipTask(ShardsTask):
    name = "clip"
    zero3_init = True  # models/clip.py initialises every parameter in the constructor of the module that owns it
    contrastive = True

    def __init__(self, clip: ClipConfig, data: DataConfig | None, tokenizer: str | None, seed: int = 0):
        self.cfg, self.data, self.tokenizer_path, self.seed = clip, data, tokenizer, seed

    def build_model(self) -> CLIP:
        return CLIP(self.cfg)

    def tokenizer(self):
        from megadalle.data.tokenizer import Tokenizer

        tok = Tokenizer(self.tokenizer_path)
        check(tok.vocab_size <= self.cfg.text_vocab, "clip.text_vocab", self.cfg.text_vocab,
              f"is smaller than the tokenizer's vocabulary ({tok.vocab_size}, {self.tokenizer_path})")
        return tok

    def batches(self, start_step: int, part: DataPart) -> Iterator[Batch]:
        if self.data is None or not self.tokenizer_path:
            raise ValueError("ClipTask needs image shards (data.shards) and a tokenizer to produce batches")
        yield from self._with_text(rank_batches(self.data, part, self.seed, start_step, self.shard_index,
                                                image_size=self.cfg.image_size))

    def validation_batches(self, part: DataPart) -> Iterator[Batch] | None:
        val = validation_data(self.data)
        if val is None or not self.tokenizer_path:
            return None
        return self._with_text(held_out_batches(val, part, image_size=self.cfg.image_size))

    def _with_text(self, stream: Iterator[Batch]) -> Iterator[Batch]:
        """Loader batches as the model's inputs: images and BPE ids of the captions."""
        tok = self.tokenizer()
        for batch in stream:
            text, cut = tok.encode_batch_cut(batch["caption"], self.cfg.text_len)
            yield {"image": batch["image"], "upscaled": batch["upscaled"], "text": text, "text_cut": cut,
                   "sample": batch["sample"]}

    def loss(self, model: CLIP, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        loss, metrics = model.loss(batch["image"], batch["text"], batch["sample"])
        return loss, {**metrics, **loader_metrics(batch)}

    def update_runner(self, part: DataPart) -> UpdateRunner | None:
        """Gradient caching over the update's micro-batches when they are several and `clip.negatives=update`."""
        whole = self._whole_update(part)
        return None if whole is None else partial(grad_cache.update, **whole)

    def validation_update(self, part: DataPart) -> UpdateValidation | None:
        """Each validation global batch's micro-batches contrasted together where `update_runner` trains so: a
        contrastive loss grows with the log of the pairs it contrasts, so val/loss scored per micro-batch sat about
        ln(grad_accum) below the training loss at equal skill."""
        whole = self._whole_update(part)
        return None if whole is None else partial(grad_cache.evaluate, **whole)

    def _whole_update(self, part: DataPart) -> dict | None:
        """The outputs and loss of gradient caching (grad_cache.update's keywords) where the contrast spans the
        update's micro-batches: several of them and `clip.negatives=update`; None where each is its own."""
        if part.grad_accum > 1 and self.cfg.negatives == "update":
            return {"encode": embed, "loss": contrastive_loss, "inputs": update_text}
        return None

    def after_update(self, model: CLIP, editor: ParamEditor, step: int) -> dict[str, float]:
        """The logit scale clamped into its range in every copy of it (CLIP.logit_scale_range)."""
        editor.clamp(model.logit_scale, *model.logit_scale_range())
        return {}

    def export_spec(self) -> ExportSpec:
        return ExportSpec("clip", self.cfg)


def update_text(batches: list[Batch]) -> dict[str, torch.Tensor]:
    """The update's token ids and sample ids, rows in the order of its embeddings, as CLIP.loss reads them for one
    micro-batch: clip_acc counts a pick of a copy of a pair's own caption as a hit, and the loss leaves a sample's
    repeats out of the contrast."""
    return {name: torch.cat([batch[name] for batch in batches]) for name in ("text", "sample")}


def embed(model: CLIP, batch: Batch, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A micro-batch's (image embeddings, text embeddings, logit scale): what the contrastive loss reads."""
    return model(batch["image"], batch["text"])


def task_from_config(cfg: dict | DictConfig) -> ClipTask:
    """The task of a composed `train-clip` config (also how `megadalle export` rebuilds a run's CLIP)."""
    cfg = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg
    data = build(DataConfig, cfg.data, "data") if cfg.get("data") is not None else None
    check(data is None or not data.tokenizer, "data.tokenizer", data and data.tokenizer,
          "CLIP reads image shards: set the top-level `tokenizer` key instead")
    return ClipTask(build(ClipConfig, cfg.clip, "clip"), data, cfg.get("tokenizer"), int(cfg.get("seed", 0)))


def train_clip(cfg: DictConfig) -> Path | None:
    """Train from a composed `train-clip` config and export the weights; returns their path on rank 0 (the demo
    calls this)."""
    return fit_and_export(cfg)[1]


def fit_and_export(cfg: DictConfig) -> tuple[Result, Path | None]:
    """`train_clip`, with the training's Result beside the weights' path (the verb's exit status needs it)."""
    from megadalle.config.train import RunConfig
    from megadalle.config.train_verbs import TrainClipConfig
    from megadalle.train.final_export import export_finished
    from megadalle.train.loop import train_from_config

    build(RunConfig, {"run_dir": cfg.get("run_dir"), "resume": cfg.get("resume", "auto")}, "")
    weights = build(TrainClipConfig, top_level(cfg, TrainClipConfig), "").weights  # text: `weights=2024` is a path
    result = train_from_config(task_from_config(cfg), cfg, FACTORY, verb="train-clip")
    result.report()
    if result.stopped_by_signal or result.rank != 0:
        return result, None
    ema = cfg.trainer.get("ema") is not None
    # generate reranks with these weights: keep the precision CLIP trained in (and its EMA, as train-dvae does)
    path = export_finished(result, Path(weights or result.run_dir / "clip.safetensors"), ema)[0]
    return result, path


def run(cfg: DictConfig) -> int:
    result, _ = fit_and_export(cfg)
    return result.exit_status(int(cfg.trainer.steps))
