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
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(WIDTH)
        self.fc1, self.fc2 = nn.Linear(WIDTH, 4 * WIDTH), nn.Linear(4 * WIDTH, WIDTH)
        self.drop = nn.Dropout(0.1)

    def forward(self, h):
        return h + self.drop(self.fc2(F.gelu(self.fc1(self.norm(h)))))


class Toy(nn.Module):
    def __init__(self, n_blocks: int = 4):
        super().__init__()
        self.embed = Embed()
        self.blocks = nn.ModuleList(Block() for _ in range(n_blocks))
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
                 record: str | None = None, layer_names: bool = False):
        self.data_seed = data_seed
        self.dropout = dropout
        self.nan_step = nan_step
        self.record = record  # a folder where each data-parallel rank appends the samples it reads (dp<rank>.jsonl)
        self.layer_names = layer_names  # give the pipeline spec `layer_names` (the plain path of each layer)

    def build_model(self):
        model = Toy()
        if not self.dropout:
            for block in model.blocks:
                block.drop.p = 0.0
        return model

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

    def pipeline(self, model):
        spec = PipelineSpec(layers=[model.embed, *model.blocks, model.head],
                            loss_fn=next_token_loss, split=lambda b: (b["tokens"], b["tokens"]))
        if self.layer_names:
            spec.layer_names = ["embed", *(f"blocks.{i}" for i in range(len(model.blocks))), "head"]
        return spec


def build_toy_task(config: dict) -> ToyTask:
    """Task factory recorded in run.json (export rebuilds the model through it)."""
    return ToyTask(config.get("data_seed", 0), config.get("dropout", True))
