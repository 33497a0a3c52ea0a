"""Data throughput per CPU core: `prepare` (decode + resize + re-encode) and the training loaders.

    python benchmarks/loader.py [--images 256] [--source-size 640x480] [--image-size 256] [--out FILE]

Generates JPEGs (smooth colour fields plus noise, so the JPEG sizes are realistic), then times, each
on one process so the numbers are per core:
  prepare         decode + RGB + resize + centre-crop + JPEG re-encode of the source images
  image loader    shard read + JPEG decode + tensor ([3, S, S] float), as the dVAE and CLIP see it
  image loader ↓2 the same with a resize to S/2 (the cost of a size mismatch)
  token loader    codes.npy read + caption BPE (with dropout), as the Transformer sees it
and `prepare` once more with one worker per core, for the parallel speed-up. Rates are given per
second of wall time and per second of the process's CPU time: on a shared machine the second is
the honest per-core number. Prints a table and writes the numbers, the machine, its load and the
date as JSON.
"""
from __future__ import annotations

import argparse
import datetime
import io
import itertools
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from arguments import default_out
from megadalle.config.data import PrepareConfig
from megadalle.data.loader import image_loader, token_loader
from megadalle.data.prepare import prepare
from megadalle.data.shards import ShardWriter
from megadalle.data.tokenizer import train_tokenizer

WORDS = "a an the red green blue small large cat dog bird car house tree sits runs on under near with".split()


def make_jpeg(rng: np.random.Generator, w: int, h: int) -> bytes:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([np.sin(xx / rng.uniform(20, 80) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(20, 80))
                     for _ in range(3)], -1)
    arr = np.clip(127 + 100 * base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_inputs(root: Path, n: int, w: int, h: int) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"{i:05d}.jpg").write_bytes(make_jpeg(rng, w, h))
        (root / f"{i:05d}.txt").write_text(" ".join(rng.choice(WORDS, 10)))


def make_tokens(root: Path, n: int, grid: int) -> None:
    rng = np.random.default_rng(1)
    with ShardWriter(root, max_count=max(1, n // 4)) as w:
        for i in range(n):
            w.write({"__key__": f"{i:06d}", "codes.npy": rng.integers(0, 8192, (grid, grid), dtype=np.uint16),
                     "txt": " ".join(rng.choice(WORDS, 12))})


def rate(fn, samples: int) -> dict[str, float]:
    """Samples per second of wall time, and per second of this process's CPU time (robust to a busy machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return {"wall": samples / (time.perf_counter() - wall), "cpu": samples / (time.process_time() - cpu)}


def drain(loader, samples: int) -> None:
    for _ in itertools.islice(iter(loader), samples // loader.global_batch):
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--source-size", default="640x480")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", default=default_out("loader"))
    args = ap.parse_args()
    w, h = (int(x) for x in args.source_size.split("x"))
    if min(w, h) < PrepareConfig.min_side:
        ap.error(f"--source-size {args.source_size}: prepare skips images whose short side is under "
                 f"data.min_side={PrepareConfig.min_side}, so nothing would be left to load")
    n, size, cores = args.images - args.images % args.batch, args.image_size, os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_inputs(tmp / "in", n, w, h)
        make_tokens(tmp / "tokens", n, size // 8)
        cfg = PrepareConfig(input=str(tmp / "in"), output=str(tmp / "shards"), image_size=size, num_workers=0)
        results = {"prepare": rate(lambda: prepare(cfg, progress=False), n)}
        par = PrepareConfig(input=str(tmp / "in"), output=str(tmp / "shards2"), image_size=size, num_workers=cores)
        parallel = rate(lambda: prepare(par, progress=False), n)
        tok = train_tokenizer(tmp / "tokens", tmp / "tok.model", vocab_size=256)
        loaders = {
            "image loader": image_loader(tmp / "shards", args.batch, size, num_workers=0, rank=0, world_size=1),
            "image loader, resize to S/2": image_loader(tmp / "shards", args.batch, size // 2, num_workers=0,
                                                        rank=0, world_size=1),
            "token loader (BPE dropout 0.1)": token_loader(tmp / "tokens", args.batch, tok, 256, 0.1,
                                                           num_workers=0, rank=0, world_size=1),
        }
        for name, loader in loaders.items():
            results[name] = rate(lambda: drain(loader, n), n)
    print(f"{'stage (one process)':<34}{'samples/s wall':>16}{'samples/cpu-s':>16}")
    for name, value in results.items():
        print(f"{name:<34}{value['wall']:>16.1f}{value['cpu']:>16.1f}")
    speedup = parallel["wall"] / results["prepare"]["wall"]
    print(f"{f'prepare ({cores} processes)':<34}{parallel['wall']:>16.1f}{'':>16}   (speed-up {speedup:.2f}x)")
    load = os.getloadavg()[0]
    print(f"1-minute load average {load:.1f} on {cores} cores (other processes share the cores: numbers are lower bounds)")
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "load_average_1m": load,
              "machine": f"{platform.processor() or platform.machine()}, {cores} cores, {platform.python_version()}",
              "images": n, "source_size": [w, h], "image_size": size, "batch": args.batch,
              "one_process": results, "prepare_parallel": {"processes": cores, "samples_per_s": parallel["wall"]}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
