"""The DALL-E Transformer: a decoder-only GPT over text tokens followed by image tokens.

A plain nn.Module: no DeepSpeed, torch.distributed or wandb here; parallelism is applied from
outside (megadalle/train/). The pieces `embed`, `blocks` and `head` are public so a pipeline
can be built from the same modules as the plain model.

Sequence layout (DESIGN.md): `text_len` text positions, then the H x W image grid in raster
order. Position j predicts token j + 1, so text positions 0..T-2 predict text, position T-1
predicts the first image token, and image positions predict the next image token; the last
image position predicts nothing. Pads are embedded by a learned vector per text position (the
paper's trick: the model can tell how long the caption was) and are never loss targets. The text loss is
the mean over the kept text targets; in training, over those of the whole update, all micro-batches and ranks
together (`segment_loss`), as one batch of the update's samples would give it.

Initialisation is GPT-2's, inside the __init__ of the module that owns each parameter, so that
ZeRO-3's partitioned construction gets the same weights (megadalle.models.gpt_init). The vocabulary
tables may be cut into row pieces that ZeRO-3 gathers one at a time (megadalle.models.vocab_tables). Each
top-level layer (embed, blocks, head) is built under its own seed (megadalle.models.seeding), so a
pipeline stage that builds only its layers gets the same weights as the whole model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from megadalle.attention import MaskSpec, attend, layer_kinds
from megadalle.config.model import TransformerConfig
from megadalle.flops import transformer_flops_per_token
from megadalle.models.gpt_init import Linear, normal_table, residual_std
from megadalle.models.norm import layer_norm
from megadalle.models.seeding import draw_base_seed, layer_seed
from megadalle.models.vocab_tables import output_matrix, token_embedding


def mask_specs(cfg: TransformerConfig) -> list[MaskSpec]:
    """Each layer's mask, from the configured pattern."""
    kinds = layer_kinds(cfg.n_layers, cfg.attention_pattern, cfg.last_layer_attention)
    return [MaskSpec(kind, cfg.text_len, cfg.grid_size, cfg.grid_size, cfg.conv_kernel, cfg.conv_wrap) for kind in kinds]


class Embed(nn.Module):
    """Token + position embeddings of both segments."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.text_tokens = token_embedding(cfg.text_vocab, d, cfg.vocab_chunk)
        self.text_pos = normal_table(cfg.text_len, d)
        self.pad = normal_table(cfg.text_len, d)
        self.image_tokens = token_embedding(cfg.image_vocab, d, cfg.vocab_chunk)
        self.image_row = normal_table(cfg.grid_size, d)
        self.image_col = normal_table(cfg.grid_size, d)

    def text(self, text: torch.Tensor) -> torch.Tensor:
        """[B, T] ids -> [B, T, d]; a pad at position i becomes pad[i]."""
        is_pad = (text == self.cfg.text_pad_id).unsqueeze(-1)
        return torch.where(is_pad, self.pad, self.text_tokens(text) + self.text_pos)

    def image(self, image: torch.Tensor, start: int = 0) -> torch.Tensor:
        """[B, n] codes at raster positions start..start+n-1 -> [B, n, d]."""
        pos = torch.arange(start, start + image.shape[1], device=image.device)
        g = self.cfg.grid_size
        return self.image_tokens(image) + self.image_row[pos // g] + self.image_col[pos % g]

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.text(text), self.image(image)], dim=1)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig, spec: MaskSpec):
        super().__init__()
        self.spec, self.n_heads, self.head_dim = spec, cfg.n_heads, cfg.head_dim
        self.backend = cfg.attention_backend
        self.qkv = Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = Linear(cfg.d_model, cfg.d_model, std=residual_std(cfg.n_layers))

    def forward(self, x: torch.Tensor, cache: LayerCache | None = None, start: int = 0) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.append(k, v, start)
        out = attend(q, k, v, self.spec, backend=self.backend, query_offset=start)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: TransformerConfig, spec: MaskSpec):
        super().__init__()
        self.ln_attn = layer_norm(cfg.d_model)
        self.attn = Attention(cfg, spec)
        self.ln_mlp = layer_norm(cfg.d_model)
        hidden = cfg.mlp_ratio * cfg.d_model
        self.mlp = nn.Sequential(Linear(cfg.d_model, hidden), nn.GELU(approximate="tanh"),
                                 Linear(hidden, cfg.d_model, std=residual_std(cfg.n_layers)))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: LayerCache | None = None, start: int = 0) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_attn(x), cache, start))
        return x + self.drop(self.mlp(self.ln_mlp(x)))


class Head(nn.Module):
    """Final norm and one output matrix over text + image vocabularies, each segment using its own rows."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.ln = layer_norm(cfg.d_model)
        self.out = output_matrix(cfg.d_model, [cfg.text_vocab, cfg.image_vocab], cfg.vocab_chunk)

    def text_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(self.ln(h), slice(None, self.cfg.text_vocab))

    def image_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(self.ln(h), slice(self.cfg.text_vocab, None))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h [B, S, d] -> (text logits [B, T-1, text_vocab], image logits [B, H*W, image_vocab])."""
        t = self.cfg.text_len
        return self.text_logits(h[:, : t - 1]), self.image_logits(h[:, t - 1: -1])


def text_targets(cfg: TransformerConfig, text: torch.Tensor) -> torch.Tensor:
    """Which text positions' targets the loss counts [B, T-1]: every next text token but the pads."""
    return text[:, 1:] != cfg.text_pad_id


def segment_loss(cfg: TransformerConfig, text_logits: torch.Tensor, image_logits: torch.Tensor,
                 text: torch.Tensor, image: torch.Tensor,
                 text_norm: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The paper's objective: each cross-entropy normalised by its own token count, then weighted.

    Text targets that are pads are excluded, so captions give different micro-batches different text token counts.
    `text_norm` is what the text nll sum is divided by: by default this batch's own count of kept targets (the
    token mean of this batch alone); in training the update's kept targets per micro-batch (the trainer's step
    totals, megadalle.train.step_totals), so that DeepSpeed's mean over micro-batches and ranks is the token mean
    of the whole update, where a micro-batch of long captions weighs more than one of short ones. The image count
    is the same in every micro-batch, so the image loss is a plain mean. A batch (or update) of empty captions has
    text loss 0.
    """
    keep = text_targets(cfg, text).flatten()
    text_nll = F.cross_entropy(text_logits.flatten(0, 1).float(), text[:, 1:].flatten(), reduction="none")
    norm = keep.sum() if text_norm is None else text_norm
    text_loss = (text_nll * keep).sum() / torch.where(norm > 0, norm, 1)  # a step's norm may be below 1, never 0
    image_loss = F.cross_entropy(image_logits.flatten(0, 1).float(), image.flatten())
    loss = cfg.text_loss_weight * text_loss + cfg.image_loss_weight * image_loss
    return loss, {"text_loss": text_loss.detach(), "image_loss": image_loss.detach()}


@dataclass
class LayerCache:
    """Keys and values of one layer for positions 0..seq_len-1, filled as decoding advances."""

    k: torch.Tensor
    v: torch.Tensor

    def append(self, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


@dataclass
class KVCache:
    layers: list[LayerCache]
    length: int = 0
    """Positions already processed; the next token goes at this position."""


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        base = draw_base_seed()  # layer i is built under seed base + i, as a pipeline stage builds it
        with layer_seed(base, 0):
            self.embed = Embed(cfg)
        blocks = []
        for i, spec in enumerate(mask_specs(cfg)):
            with layer_seed(base, 1 + i):
                blocks.append(Block(cfg, spec))
        self.blocks = nn.ModuleList(blocks)
        with layer_seed(base, 1 + cfg.n_layers):
            self.head = Head(cfg)
    def forward(self, text: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_shapes(text, image)
        h = self.embed(text, image)
        for block in self.blocks:
            if self.cfg.activation_checkpointing and self.training:
                h = checkpoint(block, h, use_reentrant=False)
            else:
                h = block(h)
        return self.head(h)

    def loss(self, text: torch.Tensor, image: torch.Tensor,
             text_norm: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The objective of `segment_loss` (`text_norm`: what the text nll sum is divided by; see there)."""
        return segment_loss(self.cfg, *self(text, image), text, image, text_norm)

    def use_attention_backend(self, backend: str) -> None:
        """Run every layer's attention through `backend` from now on. Which backend runs is the machine's choice,
        not the weights': a model trained with `triton` on GPUs is sampled on a CPU with `auto`."""
        self.cfg.attention_backend = backend
        for module in self.modules():
            if isinstance(module, Attention):
                module.backend = backend

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward, no recompute), for MFU."""
        return transformer_flops_per_token(self.cfg)

    # --- KV-cached decoding -------------------------------------------------------------
    def init_cache(self, batch: int, device: torch.device | str, dtype: torch.dtype) -> KVCache:
        shape = (batch, self.cfg.n_heads, self.cfg.seq_len, self.cfg.head_dim)
        return KVCache([LayerCache(torch.empty(shape, device=device, dtype=dtype),
                                   torch.empty(shape, device=device, dtype=dtype)) for _ in self.blocks])

    def _extend(self, h: torch.Tensor, cache: KVCache) -> torch.Tensor:
        start = cache.length
        for block, layer in zip(self.blocks, cache.layers):
            h = block(h, layer, start)
        cache.length = start + h.shape[1]
        return self.head.image_logits(h[:, -1])

    @torch.no_grad()
    def prefill(self, text: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Run the caption through the model; returns logits [B, image_vocab] for the first image token."""
        if cache.length != 0:
            raise ValueError(f"prefill needs an empty cache, this one holds {cache.length} positions")
        self._check_shapes(text, None)
        return self._extend(self.embed.text(text), cache)

    @torch.no_grad()
    def decode_step(self, image_token: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Feed the next image token [B]; returns logits [B, image_vocab] for the token after it."""
        index = cache.length - self.cfg.text_len
        if not 0 <= index < self.cfg.grid_len - 1:
            raise ValueError(f"cache holds {cache.length} positions: no image token left to predict")
        return self._extend(self.embed.image(image_token[:, None], start=index), cache)

    def _check_shapes(self, text: torch.Tensor, image: torch.Tensor | None) -> None:
        if text.dim() != 2 or text.shape[1] != self.cfg.text_len:
            raise ValueError(f"text must be [batch, {self.cfg.text_len}], got {list(text.shape)}")
        if image is not None and (image.dim() != 2 or image.shape[1] != self.cfg.grid_len):
            raise ValueError(f"image must be [batch, {self.cfg.grid_len}] codes, got {list(image.shape)}")
