"""Peak memory of `megadalle export` against one bf16 copy of the weights.

    python benchmarks/export_memory.py                   # d_model 1024 x 8 layers (~100M parameters)
    python benchmarks/export_memory.py --zero-stage 3 --d-model 512 --layers 4

Trains one update of the Transformer (one process, CPU, fp32, the given ZeRO stage) on the tiny token
data of the tests, then exports it to bf16 shards in a fresh process per shard size, sampling that
process's memory every 10 ms from just before the export (its imports done) to the end:
- anon: private memory the export allocated (the tensor being converted and written);
- rss: anon plus the checkpoint's memory-mapped pages it has read and not yet handed back (page cache:
  the kernel drops them under pressure, but they show in `top`).
Both are reported above the pre-export baseline, as multiples of the weights' bf16 bytes. The target
(issue 10) is <= 1.2x. The shards are laid out before anything is read and each tensor is written at
its place (megadalle/planned_safetensors.py), so the peak follows the largest tensor, not the shard
size: the two rows (one shard; shards of a fifth of the weights) should agree. Prints a table and
writes JSON.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from arguments import default_out

ROOT = Path(__file__).resolve().parent.parent

MEASURE = r"""
import json, sys, threading, time
from megadalle.train.consolidate import export

def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) * 1024 for k in ("RssAnon", "VmRSS")}

base, peak, done = status(), status(), False
def sample():
    while not done:
        now = status()
        for k in peak:
            peak[k] = max(peak[k], now[k])
        time.sleep(0.01)
thread = threading.Thread(target=sample, daemon=True)
thread.start()
export(sys.argv[1], sys.argv[2], max_shard_bytes=int(sys.argv[3]))
done = True
thread.join()
now = status()
print(json.dumps({k: max(peak[k], now[k]) - base[k] for k in peak}))
"""


def train_run(run_dir: Path, data: Path, args) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "distributed"))
    from dist_tokens import make_token_data

    shards, tok = make_token_data(data)
    overrides = [f"data.shards={shards}", f"data.tokenizer={tok}", "data.num_workers=0", "model=tiny",
                 f"model.d_model={args.d_model}", f"model.n_layers={args.layers}",
                 f"model.n_heads={args.d_model // 64}", "model.head_dim=64", "trainer=tiny", "trainer.steps=1", "trainer.micro_batch=1", "logger=none",
                 f"deepspeed=zero{args.zero_stage}", f"run_dir={run_dir}"]
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(29500 + os.getpid() % 1000), DS_ACCELERATOR="cpu")
    subprocess.run([sys.executable, "-m", "megadalle", "train", *overrides], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-model", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--zero-stage", type=int, default=1, choices=(1, 2, 3))
    parser.add_argument("--out", default=default_out("export_memory"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_run(tmp / "run", tmp / "data", args)
        from megadalle.train.consolidate import load_run

        model, _ = load_run(tmp / "run")
        params = sum(p.numel() for p in model.parameters())
        bf16 = 2 * params
        del model
        for label, shard in (("one shard (5 GB limit)", 5 << 30), ("shards of 1/5 of the weights", bf16 // 5)):
            done = subprocess.run([sys.executable, "-c", MEASURE, str(tmp / "run"), str(tmp / f"out{shard}"),
                                   str(shard)], capture_output=True, text=True, check=True)
            peak = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({"shards": label, "max_shard_bytes": shard, "anon_peak": peak["RssAnon"],
                         "rss_peak": peak["VmRSS"], "anon_x_bf16": peak["RssAnon"] / bf16,
                         "rss_x_bf16": peak["VmRSS"] / bf16})
    print(f"zero{args.zero_stage} checkpoint (fp32), d_model {args.d_model} x {args.layers} layers, "
          f"{params / 1e6:.1f}M parameters, bf16 copy {bf16 / 2**20:.0f} MiB, load {os.getloadavg()[0]:.1f}")
    print("| shards | anon peak MiB | x bf16 | rss peak MiB | x bf16 |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shards']} | {r['anon_peak'] / 2**20:.0f} | {r['anon_x_bf16']:.2f} | "
              f"{r['rss_peak'] / 2**20:.0f} | {r['rss_x_bf16']:.2f} |")
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
              "zero_stage": args.zero_stage, "d_model": args.d_model, "layers": args.layers, "params": params,
              "bf16_bytes": bf16, "rows": rows, "load_average": os.getloadavg()}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
