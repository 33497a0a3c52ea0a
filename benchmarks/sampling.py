"""Image tokens per second with the KV cache against the naive loop (a full forward pass per token).

    python benchmarks/sampling.py [--layers 4] [--width 256] [--text-len 256] [--grid 32] [--batch 1]
                                  [--threads 2] [--naive-tokens 8] [--out benchmarks/sampling.json]

The default is the issue's target: a 4-layer, 256-wide model over 1280 positions (256 text +
32x32 image), batch 1, on 2 CPU cores; goals >= 200 image tokens/s cached and >= 10x over naive.
A cached step is ~10 M multiply-adds, but at batch 1 it also reads every weight once (~21 MB in
fp32 at the default size, 40% of it the image head): profiled on a 2-core Xeon (AMX), the
linear layers are ~60% of a step at ~13 GB/s, attention ~15%, module-call overhead the rest, and
bf16 weights were slower than fp32 there. Batches amortise the weight reads.
The naive loop's cost per token does not depend on the position (the model always runs the whole
padded sequence, as Transformer.forward requires), so it is timed on `--naive-tokens` tokens
spread over the image and reported per token. The machine's load average is recorded: on a
shared machine every number is a lower bound.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from megadalle.config.model import TransformerConfig
from megadalle.models.transformer import Transformer
from megadalle.sampling.filters import draw, filter_logits
from megadalle.sampling.loop import SamplingSettings, sample_codes


def model_for(args) -> Transformer:
    heads = args.width // 64
    cfg = TransformerConfig(text_len=args.text_len, text_vocab=16384, grid_size=args.grid, image_vocab=8192,
                            n_layers=args.layers, n_heads=heads, head_dim=64, d_model=args.width)
    return Transformer(cfg).eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cached_tokens_per_s(model: Transformer, text: torch.Tensor, repeats: int) -> float:
    settings = SamplingSettings(top_k=64)
    best = float("inf")
    for _ in range(repeats):
        _sync(text.device)
        began = time.perf_counter()
        sample_codes(model, text, settings, torch.Generator(text.device).manual_seed(0))
        _sync(text.device)
        best = min(best, time.perf_counter() - began)
    return text.shape[0] * model.cfg.grid_len / best


@torch.no_grad()
def naive_tokens_per_s(model: Transformer, text: torch.Tensor, tokens: int) -> float:
    """The loop without a cache: token i comes from a full forward over the (zero-padded) sequence."""
    cfg = model.cfg
    image = torch.zeros(text.shape[0], cfg.grid_len, dtype=torch.long, device=text.device)
    positions = torch.linspace(0, cfg.grid_len - 1, tokens).long().tolist()
    model(text, image)  # warm-up
    _sync(text.device)
    began = time.perf_counter()
    for i in positions:
        logits = model(text, image)[1][:, i]
        image[:, i] = draw(filter_logits(logits, top_k=64))
    _sync(text.device)
    return text.shape[0] * tokens / (time.perf_counter() - began)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--text-len", type=int, default=256)
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--naive-tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (on cuda --threads only sets the host threads)")
    ap.add_argument("--out", default="benchmarks/sampling.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = model_for(args).to(args.device)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batch:
            text = torch.randint(4, 16384, (batch, args.text_len)).to(args.device)
            cached = cached_tokens_per_s(model, text, args.repeats)
            naive = naive_tokens_per_s(model, text, args.naive_tokens)
            rows.append({"threads": threads, "batch": batch, "cached_tok_s": cached, "naive_tok_s": naive,
                         "speedup": cached / naive})
            print(f"threads {threads} batch {batch:3d}: cached {cached:8.1f} tok/s  naive {naive:7.2f} tok/s  "
                  f"speedup {cached / naive:6.1f}x", flush=True)
    report = {"benchmark": "sampling", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": platform.processor()
              or platform.machine(), "cpus": os.cpu_count(), "device": args.device, "load_average": os.getloadavg(), "torch": torch.__version__,
              "model": {"layers": args.layers, "width": args.width, "text_len": args.text_len, "grid": args.grid,
                        "positions": args.text_len + args.grid ** 2, "pattern": model.cfg.attention_pattern,
                        "last_layer": model.cfg.last_layer_attention},
              "targets": {"cached_tok_s_batch1": 200, "speedup": 10}, "rows": rows}
    print(f"\n| threads | batch | cached tok/s | naive tok/s | speedup |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['threads']} | {r['batch']} | {r['cached_tok_s']:.1f} | {r['naive_tok_s']:.2f} | {r['speedup']:.1f}x |")
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} (load average {report['load_average'][0]:.1f} on {report['cpus']} CPUs)")


if __name__ == "__main__":
    main()
