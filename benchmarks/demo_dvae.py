"""The demo's dVAE stage, timed and judged, for several settings side by side on the same machine.

    python benchmarks/demo_dvae.py --variant today "" --variant fast "dvae_steps=300 dvae.n_hid=32"

Each variant is the demo's dVAE stage (megadalle.demo_verbs.train_demo_dvae: train-dvae through the
trainer, data loading included) with overrides: a `demo.*` field name (dvae_steps, dvae_batch,
dvae_lr, threads) changes the demo's config, anything else (dvae.KEY=VALUE, seed=S) goes to train-dvae
through `demo.dvae_overrides`.
The demo's data set is drawn once in --output and shared. Each trained dVAE is judged as the demo
judges it (megadalle.demo_recon.check_dvae): reconstructions that keep colour, shape and position,
codes in use, perplexity. Variants run one after the other; on a shared machine run two calls at
once (one variant each, same load) and compare CPU seconds (this process's, the data loader's worker
excluded) beside the wall seconds and the load average. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch

from arguments import default_out
from megadalle.config import build
from megadalle.config.compose import compose
from megadalle.config.demo import DemoConfig
from megadalle.demo import make_data
from megadalle.demo_recon import check_dvae
from megadalle.demo_verbs import train_demo_dvae
from megadalle.models.dvae import load_dvae


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def split_overrides(text: str) -> tuple[dict, tuple[str, ...]]:
    """'dvae_steps=300 dvae.n_hid=32' -> ({'dvae_steps': 300}, ('dvae.n_hid=32',))."""
    fields = {f.name: f.type for f in dataclasses.fields(DemoConfig)}
    demo, extra = {}, []
    for item in text.split():
        key, value = item.split("=", 1)
        if key in fields:
            demo[key] = type(getattr(DemoConfig(), key))(value)
        else:
            extra.append(item)
    return demo, tuple(extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "OVERRIDES"), required=True)
    ap.add_argument("--output", default="outputs/demo_dvae", help="data set and runs (reused between calls)")
    ap.add_argument("--preset", default="full", help="the demo's size (conf/demo/*.yaml): full or fast")
    ap.add_argument("--check-per-scene", type=int, default=8, help="fresh images per scene for the judge")
    ap.add_argument("--out", default=default_out("demo_dvae"))
    args = ap.parse_args()
    out = Path(args.output)
    base = build(DemoConfig, compose("demo", [f"demo={args.preset}"]).demo, "demo")
    if not (out / "shards" / "index.json").is_file():
        make_data(base, out, seed=0)
    rows = []
    for name, text in args.variant:
        demo, extra = split_overrides(text)
        d = dataclasses.replace(base, **demo, dvae_overrides=list(extra))
        d.validate()
        torch.set_num_threads(d.threads or os.cpu_count())
        load_before, began, cpu = os.getloadavg()[0], time.perf_counter(), time.process_time()
        weights = train_demo_dvae(d, out / name, out / "shards")
        seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu
        check = check_dvae(load_dvae(weights), d.image_size, args.check_per_scene, seed=1)
        rows.append({"variant": name, "overrides": text, "seconds": seconds, "cpu_seconds": cpu_seconds, "load_before": load_before,
                     "load_after": os.getloadavg()[0], **check})
        print(f"[demo_dvae] {rows[-1]}", flush=True)
    print(f"\n{'variant':12s} {'seconds':>8s} {'cpu s':>8s} {'load':>9s} {'recon kept':>10s} {'codes used':>10s} {'perplexity':>10s}")
    for r in rows:
        print(f"{r['variant']:12s} {r['seconds']:8.0f} {r['cpu_seconds']:8.0f} {r['load_before']:4.1f}-{r['load_after']:<4.1f} "
              f"{r['reconstructions_kept']:10.1%} {r['codes_in_use']:10.1%} {r['perplexity']:10.1f}")
    report = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
