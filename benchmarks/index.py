"""Indexing throughput per CPU core: `megadalle index` over img2dataset-style shards.

    python benchmarks/index.py [--images 512] [--image-size 256] [--per-shard 128] [--out FILE]

Writes shards the way img2dataset does (webdataset's TarWriter, `<key>.jpg/.txt/.json`, 256 px by
default), then times `index_directory` in one process: checking every sample (each JPEG decoded,
at 1/8 scale, which still reads every coefficient) and with `decode=false` (fields' presence
only). Rates are per second of wall time and of the process's CPU time (the honest per-core number
on a shared machine). Prints a table and writes the numbers, the machine, its load and the date as JSON.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import webdataset as wds

from arguments import default_out
from loader import WORDS, make_jpeg, rate
from megadalle.data.ingest import index_directory


def make_img2dataset(root: Path, n: int, size: int, per_shard: int) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for shard in range(0, n, per_shard):
        with wds.TarWriter(str(root / f"{shard // per_shard:05d}.tar")) as sink:
            for i in range(shard, min(n, shard + per_shard)):
                key = f"{i:09d}"
                sink.write({"__key__": key, "jpg": make_jpeg(rng, size, size), "txt": " ".join(rng.choice(WORDS, 10)),
                            "json": {"key": key, "status": "success", "width": size, "height": size}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--per-shard", type=int, default=128)
    ap.add_argument("--out", default=default_out("index"))
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "laion"
        make_img2dataset(root, args.images, args.image_size, args.per_shard)
        for name, decode in (("index (every image decoded)", True), ("index decode=false", False)):
            results[name] = rate(lambda: index_directory(root, ["txt"], True, num_workers=0, decode=decode),
                                 args.images)
    print(f"{'stage (one process)':<34}{'samples/s wall':>16}{'samples/cpu-s':>16}")
    for name, value in results.items():
        print(f"{name:<34}{value['wall']:>16.1f}{value['cpu']:>16.1f}")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    print(f"1-minute load average {load:.1f} on {cores} cores (other processes share the cores: numbers are lower bounds)")
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "load_average_1m": load,
              "machine": f"{platform.processor() or platform.machine()}, {cores} cores, {platform.python_version()}",
              "images": args.images, "image_size": args.image_size, "per_shard": args.per_shard,
              "one_process": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
