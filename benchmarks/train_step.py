"""Training-step throughput and MFU of the Transformer through the real trainer path.

    python benchmarks/train_step.py                        # tiny on CPU (fp32)
    python benchmarks/train_step.py --model 1b --micro-batch 8 --activation-checkpointing   # one GPU (bf16)
    python benchmarks/train_step.py --compare-plain        # trainer vs a plain PyTorch loop, 3 tasks (compare_plain.py)

Builds the model with megadalle.train.engine (deepspeed.initialize, ZeRO-1, AdamW, clipping,
the LR schedule) and times full updates (forward, backward, optimizer step) of the same Task as
`megadalle train data=synthetic` (random tokens seeded by step, megadalle.data.synthetic), so no
data set is needed and shard reading is not part of the number. Reports tokens/s and

    MFU = model.flops_per_token() x tokens/s / peak FLOP/s

where flops_per_token is forward + backward (3x forward, 2 FLOPs per multiply-add, attention
counted over the keys each mask allows, recomputation not counted) and the peak is --peak-tflops:
989 (H100 SXM dense bf16) on CUDA; on CPU the measured fp32 matmul rate of this machine, since
there is no meaningful nominal peak for a shared CPU. On a shared machine also compare the
process CPU seconds per step with the wall seconds (the JSON has both, and the load average).
Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch

from arguments import at_least, default_out, model_name, positive_float
from megadalle.config import build
from megadalle.config.compose import compose
from megadalle.config.data import DataConfig
from megadalle.config.model import TransformerConfig
from megadalle.config.train import DeepSpeedConfig, TrainerConfig
from megadalle.train import distributed, engine
from megadalle.train.steps import StepRunner
from megadalle.train.task import DataPart
from megadalle.train.transformer import TransformerTask

H100_BF16_TFLOPS = 989.0


def matmul_tflops(dtype: torch.dtype, device: str, n: int = 2048, repeat: int = 5) -> float:
    """Achieved dense matmul TFLOP/s of this device: the practical ceiling on a CPU."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    began = time.perf_counter()
    for _ in range(repeat):
        a @ b
    sync(device)
    return 2 * n ** 3 * repeat / (time.perf_counter() - began) / 1e12


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(model_name: str, micro_batch: int, steps: int, warmup: int, checkpointing: bool, peak: float | None) -> dict:
    cfg = build(TransformerConfig, compose("train", [f"model={model_name}"]).model, "model")
    cfg.activation_checkpointing = checkpointing
    device = "cuda" if torch.cuda.is_available() else "cpu"
    trainer = TrainerConfig(steps=warmup + steps, micro_batch=micro_batch, warmup_steps=10, checkpoint_every=0)
    task = TransformerTask(cfg, DataConfig(source="synthetic", shards=None))
    built = engine.build(task, trainer, DeepSpeedConfig(zero_stage=1), world_size=1)
    runner = StepRunner(built.engine.module.task, built, DataPart(micro_batch, 1, 0, 1), 0)
    for step in range(warmup):
        runner.update(step)
    sync(device)
    began, cpu_began = time.perf_counter(), time.process_time()
    for step in range(warmup, warmup + steps):
        runner.update(step)
    sync(device)
    seconds = (time.perf_counter() - began) / steps
    cpu_seconds = (time.process_time() - cpu_began) / steps
    tokens_per_s = micro_batch * cfg.seq_len / seconds
    achieved = built.model.flops_per_token() * tokens_per_s / 1e12
    if peak is None:
        peak = H100_BF16_TFLOPS if device == "cuda" else matmul_tflops(built.dtype, device)
    name = torch.cuda.get_device_name() if device == "cuda" else f"{platform.processor() or 'cpu'} x{torch.get_num_threads()} threads"
    return {"model": model_name, "params": sum(p.numel() for p in built.model.parameters()), "device": name,
            "dtype": str(built.dtype).removeprefix("torch."), "micro_batch": micro_batch, "seq_len": cfg.seq_len,
            "activation_checkpointing": checkpointing, "step_seconds": seconds, "cpu_seconds_per_step": cpu_seconds, "tokens_per_s": tokens_per_s,
            "achieved_tflops": achieved, "peak_tflops": peak, "mfu": achieved / peak,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=model_name, default="tiny",
                        help="conf/model/<name>.yaml (tiny, small, 1b, 12b)")
    parser.add_argument("--micro-batch", type=at_least(1), default=8)
    parser.add_argument("--steps", type=at_least(1), default=10, help="timed updates")
    parser.add_argument("--warmup", type=at_least(0), default=3, help="untimed updates first")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=positive_float, default=None,
                        help="MFU denominator; default 989 on CUDA, the measured matmul rate on CPU")
    parser.add_argument("--out", default=default_out("train_step"))
    parser.add_argument("--compare-plain", action="store_true",
                        help="time the trainer's step beside a plain PyTorch loop for the Transformer, dVAE and CLIP "
                             "(tiny configs, same model, optimizer, batch and threads) and report the ratio")
    parser.add_argument("--compare-out", default=default_out("train_step_compare"))
    parser.add_argument("--zero-stage", type=int, nargs="+", default=[1], choices=[0, 1],
                        help="--compare-plain: the trainer's ZeRO stage(s); one process gains nothing from ZeRO-1's "
                             "partitions, and the demo runs stage 0")
    args = parser.parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    distributed.init(distributed.detect())
    if args.compare_plain:
        compare_plain(args)
        return
    row = measure(args.model, args.micro_batch, args.steps, args.warmup, args.activation_checkpointing, args.peak_tflops)
    row["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    row["load_average"] = os.getloadavg()
    print("| model | device | dtype | micro batch | seq | params | step s | tokens/s | TFLOP/s | peak | MFU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {row['model']} | {row['device']} | {row['dtype']} | {row['micro_batch']} | {row['seq_len']} | "
          f"{row['params'] / 1e6:.2f}M | {row['step_seconds']:.3f} | {row['tokens_per_s']:.0f} | "
          f"{row['achieved_tflops']:.4f} | {row['peak_tflops']:.3f} | {100 * row['mfu']:.1f}% |")
    Path(args.out).write_text(json.dumps(row, indent=1))
    print(f"wrote {args.out}")


def compare_plain(args) -> None:
    """`--compare-plain`: the table and JSON of benchmarks/compare_plain.py for the three tasks."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from compare_plain import TASKS, compare, table

    rows = [compare(name, args.micro_batch, args.steps, args.warmup, zero_stage=stage)
            for stage in args.zero_stage for name in TASKS]
    print(table(rows))
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "load_average": os.getloadavg(), "cpu": platform.processor()}
    Path(args.compare_out).write_text(json.dumps({"rows": rows, **meta}, indent=1))
    print(f"wrote {args.compare_out}")


if __name__ == "__main__":
    main()
