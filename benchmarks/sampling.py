"""Image tokens per second: the sparse decoder vs the model's own KV cache vs no cache, side by side.

    python benchmarks/sampling.py [--layers 4] [--width 256] [--text-len 256] [--grid 32] [--batch 1]
                                  [--threads 2] [--dtype fp32 bf16] [--naive-tokens 8] [--out FILE]

The default is the issues' target: a 4-layer, 256-wide model over 1280 positions (256 text +
32x32 image), batch 1, on 2 CPU cores. Three decoders run in one process on the same model:
`sparse` (megadalle.sampling.decoder, what `generate` uses: each layer reads only the keys its mask
allows, static shapes, a CUDA graph on GPUs), `model_cache` (the model's own cached path, which the
sampler used before: dense mask slices, every cached key) and `naive` (a full forward per token).
Both wall-clock and process CPU time are reported: on a shared machine the CPU-time rate is the
steadier figure (it excludes time spent waiting for a core, though not cache contention).
A cached step is ~10 M multiply-adds, but at batch 1 it also reads every weight once (~21 MB in
fp32 at the default size, 40% of it the image head): profiled on a 2-core Xeon (AMX), the
linear layers are ~60% of a step at ~13 GB/s, attention ~15%, module-call overhead the rest, and
bf16 weights were slower than fp32 there. Batches amortise the weight reads. `--dtype` runs the same
model in each dtype named (cast from the fp32 one): `generate dtype=auto` samples in bf16 on GPUs, and
these rows are what that choice stands on.
The naive loop's cost per token does not depend on the position (the model always runs the whole
padded sequence, as Transformer.forward requires), so it is timed on `--naive-tokens` tokens
spread over the image and reported per token. The machine's load average is recorded: on a
shared machine every number is a lower bound.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from arguments import at_least, default_out
from megadalle.config.model import TransformerConfig
from megadalle.devices import DTYPES
from megadalle.models.transformer import Transformer
from megadalle.sampling.filters import sample_next
from megadalle.sampling.loop import SamplingSettings, sample_codes


def model_for(args) -> Transformer:
    heads = args.width // 64
    cfg = TransformerConfig(text_len=args.text_len, text_vocab=16384, grid_size=args.grid, image_vocab=8192,
                            n_layers=args.layers, n_heads=heads, head_dim=64, d_model=args.width)
    # the paper's repeating pattern, cut to the layers there are (--layers 1-3 asked for a 4-entry pattern)
    return Transformer(replace(cfg, attention_pattern=cfg.attention_pattern[: args.layers])).eval()


def cached_tokens_per_s(model: Transformer, text: torch.Tensor, repeats: int, sparse: bool,
                        settings: SamplingSettings) -> tuple[float, float]:
    """Best of `repeats` full images: (tokens per wall second, tokens per CPU second)."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        began, began_cpu = time.perf_counter(), time.process_time()
        sample_codes(model, text, settings, torch.Generator(text.device).manual_seed(0), sparse=sparse)
        if text.is_cuda:
            torch.cuda.synchronize()
        wall, cpu = min(wall, time.perf_counter() - began), min(cpu, time.process_time() - began_cpu)
    tokens = text.shape[0] * model.cfg.grid_len
    return tokens / wall, tokens / cpu


@torch.no_grad()
def naive_tokens_per_s(model: Transformer, text: torch.Tensor, tokens: int, settings: SamplingSettings) -> float:
    """The loop without a cache: token i comes from a full forward over the (zero-padded) sequence."""
    cfg = model.cfg
    image = torch.zeros(text.shape[0], cfg.grid_len, dtype=torch.long, device=text.device)
    positions = torch.linspace(0, cfg.grid_len - 1, tokens).long().tolist()
    model(text, image)  # warm-up
    if text.is_cuda:  # the warm-up still queued on the GPU would be timed as the first token
        torch.cuda.synchronize()
    began = time.perf_counter()
    for i in positions:
        logits = model(text, image)[1][:, i]
        image[:, i] = sample_next(logits, settings.temperature, settings.top_k, settings.top_p)
    if text.is_cuda:
        torch.cuda.synchronize()
    return text.shape[0] * tokens / (time.perf_counter() - began)


def write(report: dict, out: Path) -> None:
    """The report so far, whole (written beside and renamed): gpu_report.py keeps the rows of a stage that ran out
    of time."""
    part = out.with_name(out.name + ".part")
    part.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(part, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=at_least(1), default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--text-len", type=int, default=256)
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--batch", type=at_least(1), nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=at_least(1), nargs="+", default=[2, 1])
    ap.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), default=["fp32"],
                    help="the Transformer's dtype(s); each runs the same (fp32-initialised) model cast to it")
    ap.add_argument("--top-k", type=int, default=64, help="sampling's top_k (64: the issues' measurements; "
                    "generate's default is 0)")
    ap.add_argument("--top-p", type=float, default=1.0, help="sampling's top_p (generate's default is 0.9)")
    ap.add_argument("--naive-tokens", type=at_least(1), default=8)
    ap.add_argument("--repeats", type=at_least(1), default=2)
    ap.add_argument("--out", default=default_out("sampling"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    fp32_model = model_for(args).to(args.device)
    settings = SamplingSettings(top_k=args.top_k, top_p=args.top_p)
    rows = []
    report = {"benchmark": "sampling", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": platform.processor()
              or platform.machine(), "device": args.device, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
              "torch": torch.__version__,
              "model": {"layers": args.layers, "width": args.width, "text_len": args.text_len, "grid": args.grid,
                        "positions": args.text_len + args.grid ** 2, "pattern": fp32_model.cfg.attention_pattern,
                        "last_layer": fp32_model.cfg.last_layer_attention},
              "sampling": {"top_k": args.top_k, "top_p": args.top_p},
              "targets": {"sparse_over_model_cache_batch1": 3}, "rows": rows}
    for dtype in args.dtype:
        model = copy.deepcopy(fp32_model).to(DTYPES[dtype])  # Module.to casts in place: keep the fp32 one intact
        for threads in args.threads:
            torch.set_num_threads(threads)
            for batch in args.batch:
                text = torch.randint(4, 16384, (batch, args.text_len), device=args.device)
                sparse, sparse_cpu = cached_tokens_per_s(model, text, args.repeats, True, settings)
                cached, cached_cpu = cached_tokens_per_s(model, text, args.repeats, False, settings)
                naive = naive_tokens_per_s(model, text, args.naive_tokens, settings)
                rows.append({"dtype": dtype, "weights_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                             "threads": threads, "batch": batch, "sparse_tok_s": sparse,
                             "sparse_tok_cpu_s": sparse_cpu, "model_cache_tok_s": cached,
                             "model_cache_tok_cpu_s": cached_cpu, "naive_tok_s": naive,
                             "sparse_over_model_cache": sparse / cached, "sparse_over_naive": sparse / naive})
                print(f"{dtype} threads {threads} batch {batch:3d}: sparse {sparse:8.1f} tok/s  model cache "
                      f"{cached:8.1f} tok/s  naive {naive:7.2f} tok/s  sparse/model-cache {sparse / cached:5.2f}x "
                      f"(CPU time {sparse_cpu / cached_cpu:5.2f}x)", flush=True)
                write(report, Path(args.out))  # row by row: a stage that runs out of time keeps its rows
    report["load_average"] = os.getloadavg()
    print("\n| dtype | threads | batch | sparse tok/s (wall / CPU) | model cache tok/s (wall / CPU) | naive tok/s | "
          "sparse / model cache (wall / CPU) |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dtype']} | {r['threads']} | {r['batch']} | {r['sparse_tok_s']:.1f} / {r['sparse_tok_cpu_s']:.1f} | "
              f"{r['model_cache_tok_s']:.1f} / {r['model_cache_tok_cpu_s']:.1f} | {r['naive_tok_s']:.2f} | "
              f"{r['sparse_over_model_cache']:.2f}x / {r['sparse_tok_cpu_s'] / r['model_cache_tok_cpu_s']:.2f}x |")
    write(report, Path(args.out))
    print(f"wrote {args.out} (load average {report['load_average'][0]:.1f} on {report['cpus']} CPUs)")


if __name__ == "__main__":
    main()
