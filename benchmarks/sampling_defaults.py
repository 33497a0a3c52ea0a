"""Demo accuracy against the sampling settings, with CLIP rerank on and off, on a trained demo (no retraining).

    megadalle demo output=outputs/demo                       # once: trains and writes outputs/demo/demo.json
    python benchmarks/sampling_defaults.py --demo outputs/demo [--samples 32 --keep 8]

Reads the demo's models and its config (demo.json), draws every judged caption (held-out and seen) under
each setting of a one-factor-at-a-time sweep around temperature 1, top-k 0, top-p 1 (the full
distribution), judges the samples as the demo does, and reports per setting the held-out and seen accuracy
on colour + shape + position with the standard error over captions: "rerank" is CLIP's best `keep` of the
samples (what `generate` shows), "no rerank" all samples (what `keep` samples in sample order give on
average). Prints a Markdown table (benchmarks/RESULTS.md) and writes JSON. Every setting uses the same seed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from arguments import default_out
from megadalle.config.demo import DemoConfig
from megadalle.demo import eval_scenes, generate_and_judge, load_demo_models
from megadalle.demo_score import caption_score, percent, summarise
from megadalle.sampling.loop import SamplingSettings

FULL = "colour+shape+position"


def sweep(temperatures: list[float], top_ks: list[int], top_ps: list[float]) -> list[SamplingSettings]:
    """The full distribution, then one factor changed at a time."""
    settings = [SamplingSettings(1.0, 0, 1.0)]
    settings += [SamplingSettings(t, 0, 1.0) for t in temperatures if t != 1.0]
    settings += [SamplingSettings(1.0, k, 1.0) for k in top_ks if k != 0]
    settings += [SamplingSettings(1.0, 0, p) for p in top_ps if p != 1.0]
    return settings


def measure(models, scenes, settings: SamplingSettings, samples: int, keep: int, seed: int) -> dict:
    """Summaries per group (heldout, seen) of the judged samples of every caption under `settings`."""
    scores: dict[str, list] = {}
    for group, scene in scenes:
        _, judged = generate_and_judge(*models, scene, samples, settings, seed)
        scores.setdefault(group, []).append(caption_score(judged, scene, keep))
    return {group: summarise(per)[FULL] for group, per in scores.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", default="outputs/demo", help="a finished demo's output folder (has demo.json)")
    ap.add_argument("--temperatures", type=float, nargs="*", default=[0.7, 0.85])
    ap.add_argument("--top-k", type=int, nargs="*", default=[4, 16, 64])
    ap.add_argument("--top-p", type=float, nargs="*", default=[0.5, 0.8, 0.9])
    ap.add_argument("--samples", type=int, default=None, help="samples per caption (default: the demo's)")
    ap.add_argument("--keep", type=int, default=None, help="CLIP's best kept (default: the demo's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=default_out("sampling_defaults"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    demo = json.loads((Path(args.demo) / "demo.json").read_text())
    fields = {f.name for f in dataclasses.fields(DemoConfig)}
    d = DemoConfig(**{k: v for k, v in demo["config"].items() if k in fields})
    samples, keep = args.samples or d.samples, args.keep or d.keep
    models, scenes = load_demo_models(Path(args.demo)), eval_scenes(d, demo["seed"])
    rows = []
    for settings in sweep(args.temperatures, args.top_k, args.top_p):
        began = time.perf_counter()
        groups = measure(models, scenes, settings, samples, keep, demo["seed"])
        rows.append({**dataclasses.asdict(settings), "seconds": time.perf_counter() - began, **groups})
        print(f"[sampling_defaults] {rows[-1]}", flush=True)
    print("\n| temperature | top_k | top_p | held-out, rerank | held-out, no rerank | seen, rerank | seen, no rerank |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [percent(r[g][p], r[g][f"{p}_se"]) for g in ("heldout", "seen") if g in r for p in ("reranked", "raw")]
        print(f"| {r['temperature']} | {r['top_k']} | {r['top_p']} | " + " | ".join(cells) + " |")
    report = {"demo": str(args.demo), "samples": samples, "keep": keep, "captions": len(scenes),
              "load": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
