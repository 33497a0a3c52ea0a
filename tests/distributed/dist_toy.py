"""A toy task for the trainer's tests: a few residual MLP blocks predicting the next token.

Small enough that ZeRO, pipeline and resume tests run in seconds, yet shaped like the real
Transformer (embed -> blocks -> head) so the pipeline path is exercised the same way.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from megadalle.models.seeding import draw_base_seed, layer_seed
from megadalle.train.task import DataPart, ExportSpec, PipelineSpec, Task

VOCAB, WIDTH, SEQ = 64, 32, 12


class Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, WIDTH)
        self.pos = nn.Parameter(torch.randn(SEQ, WIDTH) * 0.02)

    def forward(self, tokens):
        return self.tok(tokens) + self.pos


class Block(nn.Module):
    def __init__(self, dropout: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(WIDTH)
        self.fc1, self.fc2 = nn.Linear(WIDTH, 4 * WIDTH), nn.Linear(4 * WIDTH, WIDTH)
        self.drop = nn.Dropout(dropout)

    def forward(self, h):
        return h + self.drop(self.fc2(F.gelu(self.fc1(self.norm(h)))))


class Toy(nn.Module):
    """Layer i built under seed base + i, as a pipeline stage builds it (megadalle.models.seeding)."""

    def __init__(self, n_blocks: int = 4, dropout: float = 0.1):
        super().__init__()
        base = draw_base_seed()
        with layer_seed(base, 0):
            self.embed = Embed()
        blocks = []
        for i in range(n_blocks):
            with layer_seed(base, 1 + i):
                blocks.append(Block(dropout))
        self.blocks = nn.ModuleList(blocks)
        with layer_seed(base, 1 + n_blocks):
            self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, tokens):
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def next_token_loss(logits, tokens):
    return F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB).float(), tokens[:, 1:].reshape(-1))


class ToyTask(Task):
    name = "toy"

    def __init__(self, data_seed: int = 0, dropout: bool = True, nan_step: int | None = None,
                 record: str | None = None):
        self.data_seed = data_seed
        self.nan_step = nan_step
        self.p_drop = 0.1 if dropout else 0.0
        self.record = record  # a folder where each data-parallel rank appends the samples it reads (dp<rank>.jsonl)

    def build_model(self):
        return Toy(dropout=self.p_drop)

    def batches(self, start_step: int, part: DataPart):
        step = start_step
        while True:
            for a in range(part.grad_accum):
                g = torch.Generator().manual_seed(self.data_seed * 1_000_003 + step)
                tokens = torch.randint(0, VOCAB, (part.global_batch, SEQ), generator=g)
                tokens[:, 1::2] = (tokens[:, 0::2] * 7 + 3) % VOCAB  # learnable structure
                i = part.reader(a)
                micro = tokens[i * part.micro_batch:(i + 1) * part.micro_batch]
                if self.record:
                    with open(Path(self.record) / f"dp{part.dp_rank}.jsonl", "a") as f:
                        f.write(json.dumps({"step": step, "rows": micro.tolist()}) + "\n")
                yield {"tokens": micro}
            step += 1

    def loss(self, model, batch, step):
        loss = next_token_loss(model(batch["tokens"]), batch["tokens"])
        if step == self.nan_step:
            loss = loss * float("nan")  # a poisoned update, which the trainer must skip
        return loss, {"ppl": float(loss.detach().exp())}

    def tokens_per_sample(self):
        return SEQ

    def flops_per_sample(self, model):
        return 6 * sum(p.numel() for p in model.parameters()) * SEQ

    def export_spec(self):
        return ExportSpec("toy", {"n_blocks": 4})

    def pipeline(self):
        from deepspeed.pipe import LayerSpec

        layers = [LayerSpec(Embed), *(LayerSpec(Block, self.p_drop) for _ in range(4)),
                  LayerSpec(nn.Linear, WIDTH, VOCAB)]
        names = ["embed", *(f"blocks.{i}" for i in range(4)), "head"]
        return PipelineSpec(layers, names, loss_fn=next_token_loss, split=lambda b: (b["tokens"], b["tokens"]))


def build_toy_task(config: dict) -> ToyTask:
    """Task factory recorded in run.json (export rebuilds the model through it)."""
    return ToyTask(config.get("data_seed", 0), config.get("dropout", True))
