"""Sparse-aware KV-cached decoding: each layer's step reads only the keys its mask allows.

The model's own cached path (`Transformer.decode_step`) is exact but general: every step slices the
dense [seq, seq] mask, allocates, and attends over every cached key, so at batch 1 a step of a
small model is mostly overhead. Here everything a step needs is built once per sampling batch:
- each layer's attention window is one slice of its buffer: the m image keys the layer may read,
  which each step gathers into its head, then the caption's keys and values, which the prefill
  writes once as the start of the model's own cache (the rest of the buffer), so they are stored once;
- the image keys a layer may read from image position i are a per-layer table [grid_len, m] of
  image indices (padded with -inf biases to the layer's widest row), built from
  `masks.allowed`, so a row layer reads W + 1 image keys, a column layer at most H, the conv
  layer its window, instead of all of them; one SDPA call per layer attends over the window;
- the position embedding of every image position is one precomputed table;
- the position is a device tensor advanced in place, so one step has static shapes and no
  Python-side indexing: on CUDA the step is captured once in a CUDA graph and replayed.
The blocks' own modules (norms, projections, MLP) run the step, so weights are never copied and
the arithmetic is the model's; `tests/sample/test_cache.py` checks logits and samples against
the model's cached path.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from megadalle.attention.masks import MaskSpec, allowed
from megadalle.models.transformer import KVCache, LayerCache


def image_key_table(spec: MaskSpec, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image query position i: the image key positions it may read, padded, and their biases.

    Returns (index [grid_len, m] long, bias [grid_len, m] float with 0 where allowed, -inf on padding);
    m is the largest number of image keys any position reads under `spec`. Padding points at the
    query's own position, never at a slot not yet written (whose garbage could be NaN: 0 * NaN = NaN).
    Built once per mask (a decoder is made per batch of samples), then copied to `device`.
    """
    index, bias = _cpu_key_table(spec)
    return index.to(device), bias.to(device)


@lru_cache(maxsize=64)
def _cpu_key_table(spec: MaskSpec) -> tuple[torch.Tensor, torch.Tensor]:
    grid_len = spec.grid_h * spec.grid_w
    t = spec.text_len
    idx = torch.arange(grid_len)
    visible = allowed(spec, t + idx[:, None], t + idx[None, :])
    width = int(visible.sum(1).max())
    # Allowed keys first (stable order), padding after: topk over a 0/1 score with position tie-break.
    score = visible.float() * 2 * grid_len - idx[None, :].float()
    index = score.topk(width, dim=1).indices.sort(dim=1).values
    keep = visible.gather(1, index)
    index = torch.where(keep, index, idx[:, None])  # padding reads the query's own, freshly written key
    bias = torch.zeros(grid_len, width).masked_fill(~keep, float("-inf"))
    return index, bias


class SparseDecoder:
    """Decodes image tokens for one batch of captions; `prefill(text)` then `step(token)` per token."""

    def __init__(self, model, batch: int, device: torch.device | str, dtype: torch.dtype):
        cfg = model.cfg
        self.model, self.cfg, self.dtype = model, cfg, dtype
        t = cfg.text_len
        self.tables = [self._with_text(*image_key_table(block.attn.spec, device)) for block in model.blocks]
        rows = torch.arange(cfg.grid_len, device=device)
        embed = model.embed
        with torch.no_grad():
            self.position_table = (embed.image_row[rows // cfg.grid_size]
                                   + embed.image_col[rows % cfg.grid_size]).to(dtype)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        """Image index of the token the next step feeds (a tensor, so a captured graph can advance it)."""
        buffers = [[torch.empty(batch, cfg.n_heads, index.shape[1] + cfg.seq_len, cfg.head_dim, device=device,
                                dtype=dtype) for _ in "kv"] for index, _ in self.tables]
        self.cache = KVCache([LayerCache(k[:, :, index.shape[1]:], v[:, :, index.shape[1]:])
                              for (k, v), (index, _) in zip(buffers, self.tables)])
        """The model's cache (positions 0..seq_len-1) is each buffer after its first m slots."""
        self.windows = [(k[:, :, : index.shape[1] + t], v[:, :, : index.shape[1] + t])
                        for (k, v), (index, _) in zip(buffers, self.tables)]
        """Per layer: the keys and values one step attends to: m gathered image keys, then the caption's own
        cached keys, so the caption is stored once (a window apart from the cache would repeat its 256 keys per
        layer: 16% of a 12B sample's memory)."""
        self.image_kv = [(layer.k[:, :, t:], layer.v[:, :, t:]) for layer in self.cache.layers]
        self.graph = None

    def _with_text(self, index: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The image-key table and its bias widened by the caption's keys, which follow the image keys in a
        window (always visible: bias 0)."""
        text = torch.zeros(bias.shape[0], self.cfg.text_len, dtype=bias.dtype, device=bias.device)
        return index, torch.cat([bias, text], 1).to(self.dtype)

    @torch.no_grad()
    def prefill(self, text: torch.Tensor) -> torch.Tensor:
        """Run the caption (the model's own cached prefill, which writes the windows' caption keys);
        logits [B, image_vocab] for image token 0."""
        self.position.zero_()
        self.cache.length = 0
        return self.model.prefill(text, self.cache)

    def _attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v [B, H, 1, D] of the new token: store k, v, attend over caption + allowed image keys."""
        image_k, image_v = self.image_kv[layer]
        image_k.index_copy_(2, self.position, k)
        image_v.index_copy_(2, self.position, v)
        index, bias = self.tables[layer]
        keys = index.index_select(0, self.position).view(-1)
        key_buf, value_buf = self.windows[layer]
        m = index.shape[1]
        key_buf[:, :, :m] = image_k.index_select(2, keys)
        value_buf[:, :, :m] = image_v.index_select(2, keys)
        return F.scaled_dot_product_attention(q, key_buf, value_buf, attn_mask=bias.index_select(0, self.position))

    def _step(self, token: torch.Tensor) -> torch.Tensor:
        model, cfg = self.model, self.cfg
        b = token.shape[0]
        h = model.embed.image_tokens(token)[:, None] + self.position_table.index_select(0, self.position)
        for i, block in enumerate(model.blocks):
            x = block.ln_attn(h)
            q, k, v = block.attn.qkv(x).view(b, 1, 3, cfg.n_heads, cfg.head_dim).permute(2, 0, 3, 1, 4)
            out = self._attend(i, q, k, v)
            h = h + block.attn.proj(out.transpose(1, 2).reshape(b, 1, cfg.d_model))
            h = h + block.mlp(block.ln_mlp(h))
        self.position += 1
        return model.head.image_logits(h[:, -1])

    @torch.no_grad()
    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Feed the next image token [B]; logits [B, image_vocab] for the token after it."""
        if not token.is_cuda:
            return self._step(token)
        if self.graph is None:
            self._capture(token)
        self.static_token.copy_(token)
        self.graph.replay()
        return self.static_logits.clone()

    def _capture(self, token: torch.Tensor) -> None:
        """Record one step as a CUDA graph (warmed up on a side stream, as torch.cuda.graphs requires).

        The warm-up and capture run real steps, so the position and the one cache slot they wrote are restored
        (the slot alone: a copy of the whole image cache would be 33 GB at the 12B's batch of 32 in bf16).
        """
        start = self.position.clone()
        saved = [(k.index_select(2, start), v.index_select(2, start)) for k, v in self.image_kv]
        self.static_token = token.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.position.copy_(start)
                self._step(self.static_token)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        self.position.copy_(start)
        with torch.cuda.graph(self.graph):
            self.static_logits = self._step(self.static_token)
        self.position.copy_(start)
        for (k, v), (sk, sv) in zip(self.image_kv, saved):
            k.index_copy_(2, start, sk)
            v.index_copy_(2, start, sv)
