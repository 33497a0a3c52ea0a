"""Attention benchmark: our block-sparse kernel vs FlexAttention vs SDPA with a dense boolean mask.

All three serve the same masks (megadalle/attention/masks.py): ours through its block tables,
FlexAttention through `create_block_mask` over the same `allowed` function, SDPA through the dense
matrix. Reported per mask and method: forward and forward+backward time, useful TFLOP/s (only
allowed query-key pairs count, 4 FLOPs per pair and head dimension forward, 2.5x that backward),
peak memory above the inputs, and the forward's largest deviation from SDPA.

    python benchmarks/attention.py --blocks-only   # tile fractions at the 12b shape, any machine
    python benchmarks/attention.py --out attention.json  # the 12b shape on a GPU
    python benchmarks/attention.py --cpu-check     # the whole harness at a tiny shape on a CPU

Without CUDA the harness runs the tiny CPU check (Triton under its interpreter, FlexAttention
eager, whose backward needs a GPU): it proves the harness, its numbers are not timings.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import warnings
from functools import partial

import torch

if "--cpu-check" in sys.argv or not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported and the kernels decorated

import triton  # noqa: E402
from megadalle.attention.dispatch import kernel_attention  # noqa: E402
from megadalle.attention.masks import MaskSpec, allowed, dense_mask  # noqa: E402
from megadalle.kernels import build_layout, grid_column_major_order  # noqa: E402

TWELVE_B = dict(text_len=256, grid=32, batch=4, heads=62, head_dim=64, dtype="bfloat16")
CPU_CHECK = dict(text_len=8, grid=4, batch=1, heads=2, head_dim=16, dtype="float32")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--blocks-only", action="store_true", help="only print the tile fractions (no kernels run)")
    p.add_argument("--cpu-check", action="store_true", help="run the harness at a tiny shape on the CPU")
    p.add_argument("--masks", default="row,column,conv,row_strict,dense", help="comma-separated mask kinds")
    p.add_argument("--methods", default="ours,flex,sdpa", help="comma-separated: ours, flex, sdpa")
    p.add_argument("--batch", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--reps", type=int, default=20, help="timed repetitions per measurement (GPU)")
    p.add_argument("--out", default="attention.json", help="JSON file for the results")
    return p.parse_args()


def block_fractions(text_len: int, grid: int, blocks=(64, 128)) -> list[dict]:
    """Tiles visited per mask (full + partial, as fractions of all tiles); column both raster and column-major."""
    rows = []
    for kind in ("dense", "row", "row_strict", "column", "conv"):
        spec = MaskSpec(kind, text_len, grid, grid)
        orders = {"raster": None}
        if kind == "column":
            orders["column-major"] = grid_column_major_order(text_len, grid, grid, spec.seq_len)
        for block in blocks:
            for name, order in orders.items():
                layout = build_layout(partial(allowed, spec), spec.seq_len, block, block, order)
                full, part = layout.fractions()
                rows.append(dict(mask=kind, block=block, order=name, full=full, partial=part, visited=full + part))
    return rows


def print_table(rows: list[dict], columns: list[str]) -> None:
    def fmt(value):
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return "-" if value is None else str(value)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _flex(spec: MaskSpec, seq_len: int, device: str):
    """FlexAttention with the mask as a BlockMask of the same `allowed`; compiled on CUDA, eager on CPU."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    block_mask = create_block_mask(lambda b, h, q, k: allowed(spec, q, k), None, None, seq_len, seq_len,
                                   device=device)
    if device != "cuda":  # eager on purpose: the CPU check proves the harness, not flex's CPU speed
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
    fn = torch.compile(flex_attention) if device == "cuda" else flex_attention
    return lambda q, k, v: fn(q, k, v, block_mask=block_mask)


def _sdpa(spec: MaskSpec, seq_len: int, device: str):
    mask = dense_mask(spec, device)[:seq_len, :seq_len]
    return lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _ours(spec: MaskSpec, seq_len: int, device: str):
    return lambda q, k, v: kernel_attention(q, k, v, spec)


METHODS = {"ours": _ours, "flex": _flex, "sdpa": _sdpa}


def _time_ms(fn, cuda: bool, reps: int) -> float:
    """Median milliseconds of `fn()`: CUDA events on a GPU, wall clock on a CPU (after one warm-up call)."""
    fn()
    times = []
    for _ in range(reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def measure(kind: str, method: str, shape: dict, device: str, reps: int) -> dict:
    """One row of the timing table."""
    cuda = device == "cuda"
    spec = MaskSpec(kind, shape["text_len"], shape["grid"], shape["grid"])
    seq_len, dtype = spec.seq_len, getattr(torch, shape["dtype"])
    gen = torch.Generator(device).manual_seed(0)
    q, k, v = (torch.randn(shape["batch"], shape["heads"], seq_len, shape["head_dim"], device=device, dtype=dtype,
                           generator=gen).requires_grad_() for _ in range(3))
    grad = torch.randn_like(q)
    pairs = int(dense_mask(spec)[:seq_len, :seq_len].sum())
    fwd_flops = 4.0 * pairs * shape["head_dim"] * shape["batch"] * shape["heads"]
    row = dict(mask=kind, method=method)
    fn = METHODS[method](spec, seq_len, device)
    inputs = [t.detach() for t in (q, k, v)]  # FlexAttention on a CPU refuses tensors that require grad
    with torch.no_grad():
        reference = _sdpa(spec, seq_len, device)(*inputs).float()
        row["max_err"] = (fn(*inputs).float() - reference).abs().max().item()
        row["fwd_ms"] = _time_ms(lambda: fn(*inputs), cuda, reps)
    row["fwd_tflops"] = fwd_flops / row["fwd_ms"] / 1e9
    if method == "flex" and not cuda:
        row["note"] = "flex backward needs a GPU"
        return row
    base = torch.cuda.memory_allocated() if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    row["fwd_bwd_ms"] = _time_ms(lambda: torch.autograd.grad(fn(q, k, v), (q, k, v), grad), cuda, reps)
    row["fwd_bwd_tflops"] = 3.5 * fwd_flops / row["fwd_bwd_ms"] / 1e9
    row["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20 if cuda else None
    return row


def summary(rows: list[dict]) -> list[str]:
    """Speed-ups of ours over the others (forward+backward) and the column layer against the row layer."""
    time_of = {(r["mask"], r["method"]): r.get("fwd_bwd_ms") for r in rows}
    lines = []
    for (kind, method), ms in time_of.items():
        ours = time_of.get((kind, "ours"))
        if method != "ours" and ms and ours:
            lines.append(f"{kind}: forward+backward speed-up of ours over {method}: {ms / ours:.2f}x")
    if time_of.get(("row", "ours")) and time_of.get(("column", "ours")):
        lines.append(f"column / row time (ours, forward+backward): {time_of[('column', 'ours')] / time_of[('row', 'ours')]:.2f}")
    return lines


def main() -> None:
    args = parse_args()
    result = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  torch=torch.__version__, triton=triton.__version__, host=platform.node())
    print(f"Tiles visited at the 12b shape (text {TWELVE_B['text_len']}, {TWELVE_B['grid']}x{TWELVE_B['grid']} grid)")
    result["blocks"] = block_fractions(TWELVE_B["text_len"], TWELVE_B["grid"])
    print_table(result["blocks"], ["mask", "block", "order", "full", "partial", "visited"])
    if not args.blocks_only:
        cuda = torch.cuda.is_available() and not args.cpu_check
        shape = dict(TWELVE_B if cuda else CPU_CHECK)
        shape.update({k: getattr(args, k) for k in ("batch", "heads") if getattr(args, k)})
        device = "cuda" if cuda else "cpu"
        result.update(device=torch.cuda.get_device_name() if cuda else "cpu (harness check only, not timings)",
                      shape=shape)
        print(f"\n{result['device']}: {shape}")
        rows = [measure(kind, method, shape, device, args.reps if cuda else 1)
                for kind in args.masks.split(",") for method in args.methods.split(",")]
        result["timings"] = rows
        print_table(rows, ["mask", "method", "fwd_ms", "fwd_bwd_ms", "fwd_tflops", "fwd_bwd_tflops", "peak_mib",
                           "max_err", "note"])
        result["summary"] = summary(rows)
        print("\n".join(result["summary"]))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
