"""`megadalle train`: the DALL-E Transformer on token shards, through the generic trainer.

The task reads the step-indexed token loader through `rank_batches` (or, with data=synthetic,
random tokens seeded by step): accumulation step a of data-parallel rank r reads micro-batch
a * dp_world + r, so every layout (one process accumulating, ZeRO ranks, pipeline data-parallel
groups) sees the same global batches. The pipeline form is LayerSpecs of the model's own Embed,
Block and Head classes with the model's own loss (`segment_loss`), so pipelined and plain training
optimise the same function. The text loss of an update is the mean over the kept text targets of all its
micro-batches on all ranks: the task counts them (`loss_counts`) and divides each micro-batch's text nll sum
by the update's count per micro-batch (megadalle.train.step_totals); under a pipeline the totals ride with
the labels to the last stage's loss, which reports the text and image losses beside it (train/pipeline.py's
LossWithParts), so they are logged in every layout.
With `dvae_weights=`, every `trainer.media_every` updates the task draws a grid of samples of a few
fixed captions, the validation split's or else the training shards' (train/sample_grid.py), written to
`<run>/samples/` and logged to wandb.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import DictConfig, OmegaConf

from megadalle.config import build, check, top_level
from megadalle.config.data import DataConfig
from megadalle.config.model import TransformerConfig
from megadalle.config.train_verbs import TrainConfig
from megadalle.data import synthetic
from megadalle.flops import transformer_flops_per_token
from megadalle.models.transformer import Block, Embed, Head, Transformer, mask_specs, segment_loss, text_targets
from megadalle.train.pipeline import LossWithParts
from megadalle.train.sample_grid import SampleGrid, caption_sources
from megadalle.train.step_totals import per_micro_batch, step_total
from megadalle.train.task import (Batch, DataPart, ExportSpec, PipelineSpec, ShardsTask, loader_metrics,
                                  held_out_batches, rank_batches, validation_data)

FACTORY = "megadalle.train.transformer:task_from_config"
TEXT_TARGETS = "text_targets"
"""The loss count of the Transformer task: kept (non-pad) text targets."""
LOSS_PARTS = ("text_loss", "image_loss")
"""The parts of `segment_loss`, logged beside the loss in every layout (a pipeline's last stage reports them)."""


class TransformerTask(ShardsTask):
    name = "transformer"
    zero3_init = True  # models/transformer.py initialises per module

    def __init__(self, model: TransformerConfig, data: DataConfig | None, seed: int = 0,
                 grid: SampleGrid | None = None):
        self.cfg, self.data, self.seed, self.grid = model, data, seed, grid

    def build_model(self) -> Transformer:
        return Transformer(self.cfg)

    def batches(self, start_step: int, part: DataPart) -> Iterator[Batch]:
        if self.data is None:
            raise ValueError("TransformerTask built without a data config cannot produce batches")
        if self.data.source == "synthetic":
            readers = [part.reader(a) for a in range(part.grad_accum)]
            yield from synthetic.token_batches(self.token_shape(), self.seed, start_step, part.micro_batch, readers)
        else:
            yield from rank_batches(self.data, part, self.seed, start_step, self.shard_index,
                                    text_len=self.cfg.text_len)

    def token_shape(self) -> synthetic.TokenShape:
        cfg = self.cfg
        return synthetic.TokenShape(cfg.text_len, cfg.text_vocab, cfg.text_pad_id, cfg.grid_len, cfg.image_vocab)

    def validation_batches(self, part: DataPart) -> Iterator[Batch] | None:
        val = validation_data(self.data)
        return None if val is None else held_out_batches(val, part, text_len=self.cfg.text_len)

    def data_identity(self, part: DataPart) -> dict:
        if self.data is None:
            return {}
        if self.data.source == "synthetic":
            return {"source": "synthetic", "seed": self.seed, "global_batch": part.global_batch}
        return super().data_identity(part)

    def loss_counts(self, batch: Batch) -> dict[str, int]:
        return {TEXT_TARGETS: int(text_targets(self.cfg, batch["text"]).sum())}

    def loss(self, model: Transformer, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        loss, parts = model.loss(batch["text"], batch["image"], per_micro_batch(step_total(batch, TEXT_TARGETS)))
        return loss, {**{name: float(value) for name, value in parts.items()}, **loader_metrics(batch)}

    def media(self, model: Transformer, step: int) -> dict[str, Any]:
        return {} if self.grid is None else {"samples": self.grid(model)}

    def tokens_per_sample(self) -> int:
        return self.cfg.seq_len

    def flops_per_sample(self, model) -> float:
        """From the config: under a pipeline `model` is only this stage's view."""
        return transformer_flops_per_token(self.cfg) * self.cfg.seq_len

    def export_spec(self) -> ExportSpec:
        """Exports hold whole vocabulary tables (consolidate.export joins pieces), so their config has none."""
        return ExportSpec("transformer", replace(self.cfg, vocab_chunk=0))

    def model_config(self) -> TransformerConfig:
        return self.cfg

    def pipeline(self) -> PipelineSpec:
        from deepspeed.pipe import LayerSpec

        cfg = self.cfg

        def loss_fn(outputs, labels):
            text, image, *total = labels
            return segment_loss(cfg, *outputs, text, image, per_micro_batch(total or None))

        def split(batch: Batch):
            """(inputs, labels); the labels carry the update's text target total, when given, as two more tensors."""
            pair = (batch["text"], batch["image"])
            total = step_total(batch, TEXT_TARGETS)
            return pair, pair if total is None else (*pair, *total)

        layers = [LayerSpec(PipeEmbed, cfg), *(LayerSpec(Block, cfg, spec) for spec in mask_specs(cfg)),
                  LayerSpec(Head, cfg)]
        names = ["embed", *(f"blocks.{i}" for i in range(cfg.n_layers)), "head"]
        return PipelineSpec(layers, names, LossWithParts(loss_fn, LOSS_PARTS), split,
                            checkpointable=[Block.__name__], activation_checkpointing=cfg.activation_checkpointing)


class PipeEmbed(Embed):
    """The embedding as a pipeline's first layer: one input, the (text, image) pair (same parameters as Embed)."""

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return super().forward(*inputs)


def task_from_config(cfg: dict | DictConfig) -> TransformerTask:
    """The task of a composed `train` config (also how `megadalle export` rebuilds a run's model)."""
    cfg = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg
    data = build(DataConfig, cfg.data, "data") if cfg.get("data") is not None else None
    return TransformerTask(build(TransformerConfig, cfg.model, "model"), data, int(cfg.get("seed", 0)),
                           sample_grid(cfg, data))


def sample_grid(cfg: DictConfig, data: DataConfig | None) -> SampleGrid | None:
    """The sample grid of the verb's `dvae_weights`, `media_captions` and `media_samples` keys (None without a dVAE)."""
    keys = build(TrainConfig, top_level(cfg, TrainConfig), "")
    if not keys.dvae_weights or data is None:
        return None
    check(data.source != "synthetic", "dvae_weights", keys.dvae_weights,
          "draws sample grids of captions from token shards, and data=synthetic has none: drop dvae_weights, or "
          "train on shards")
    return SampleGrid(keys.dvae_weights, data.tokenizer, caption_sources(data), keys.media_captions,
                      keys.media_samples, int(cfg.get("seed", 0)))


def run(cfg: DictConfig) -> int:
    from megadalle.config.train import RunConfig
    from megadalle.train.loop import train_from_config

    build(RunConfig, {"run_dir": cfg.get("run_dir"), "resume": cfg.get("resume", "auto")}, "")
    check(not cfg.get("dvae_weights") or Path(cfg.dvae_weights).exists(), "dvae_weights", cfg.get("dvae_weights"),
          "does not exist (the dVAE that decodes the sample grids: a .safetensors file or a train-dvae run)")
    result = train_from_config(task_from_config(cfg), cfg, FACTORY)
    result.report()
    return result.exit_status(int(cfg.trainer.steps))
