"""Compile the kernels for a GPU target on a machine without one: `python -m megadalle.kernels.lowering`.

The CPU interpreter proves the kernels' arithmetic but not that Triton can lower them, nor what
the GPU will pay in registers, spills and shared memory. Triton's own compiler with its bundled
ptxas needs only a target. To describe the variants that really run, the launch arguments come
from the same functions the launches use (`forward.launch_args`, `backward.dq_args`/`dkdv_args`)
at the 12b shape (q, k, v as the model's views of one qkv buffer, on the meta device), and go
through the JIT's own binder: every integer's ==1 and divisible-by-16 specialisation and every
pointer's alignment hint are the JIT's, and every autotuning config is compiled.
Run it with TRITON_INTERPRET unset: the interpreter replaces the kernels with Python functions.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from functools import partial

import torch
import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

from . import backward, forward
from .layout import build_layout, grid_column_major_order

TWELVE_B = dict(batch=4, heads=62, text_len=256, grid=32)
MASKS = {"row": False, "column": True}
"""Layer kinds whose layouts are compiled, and whether the kernels walk them permuted (column-major)."""


def _causal_band(text_len: int, grid: int, kind: str):
    """A stand-in for the row / column masks with the same visiting order: the kernels' specialisation
    depends only on the order being present, never on which tiles are visited."""
    def allowed(q, k):
        near = (q - k).abs() <= grid
        return (k <= q) & (near | (k < text_len))
    seq_len = text_len + grid * grid
    order = grid_column_major_order(text_len, grid, grid, seq_len) if kind == "column" else None
    return build_layout(allowed, seq_len, 64, 64, order)


def launches(head_dim: int, kind: str, dtype: torch.dtype) -> dict:
    """{kernel name: (JIT kernel, args, constexprs)} as the forward and backward launch them at the 12b shape."""
    batch, heads = TWELVE_B["batch"], TWELVE_B["heads"]
    layout = _causal_band(TWELVE_B["text_len"], TWELVE_B["grid"], kind)
    meta = partial(torch.empty, device="meta")
    qkv = meta(batch, layout.seq_len, 3, heads, head_dim, dtype=dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    o, do, dq, dk, dv = (forward.empty_output(t) for t in (q, q, q, k, v))
    lse, delta = (meta(batch * heads, layout.seq_len, dtype=torch.float32) for _ in range(2))
    scale = head_dim ** -0.5
    return {
        "forward": (forward._fwd_kernel, *forward.launch_args(q, k, v, o, lse, layout, scale)[1:]),
        "dq": (backward._dq_kernel, *backward.dq_args(do, q, k, v, o, lse, delta, dq, layout, scale)[1:]),
        "dkdv": (backward._dkdv_kernel, *backward.dkdv_args(do, q, k, v, lse, delta, dk, dv, layout, scale)[1:]),
    }


def tuned_configs(kernel, consts: dict) -> list:
    """The configs the autotuner would time for these constexprs (after its early pruning, if any)."""
    if kernel.early_config_prune is None:
        return list(kernel.configs)
    return kernel.early_config_prune(kernel.configs, {}, **consts)


def compile_variant(kernel, args: tuple, consts: dict, config: triton.Config, arch: int):
    """Compile one autotuning config of `kernel` for sm_`arch` exactly as JITFunction.run would."""
    fn = getattr(kernel, "fn", kernel)  # the JITFunction under the autotuner
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    kwargs = dict(consts, **config.all_kwargs())
    kwargs["debug"] = kwargs.get("debug", fn.debug) or knobs.runtime.debug
    kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    if hasattr(knobs.compilation, "fpsan_homomorphic_casts"):  # Triton >= 3.7's JIT passes it; 3.6's does not
        kwargs["fpsan_homomorphic_casts"] = knobs.compilation.fpsan_homomorphic_casts
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound_args, specialization, options)
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)


def resources(compiled, arch: int) -> dict:
    """Registers per thread and spill bytes (ptxas -v on the compiled PTX) and shared memory bytes."""
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as ptx:
        ptx.write(compiled.asm["ptx"])
        ptx.flush()
        log = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name={sm_arch_from_capability(arch)}",
                              ptx.name, "-o", "/dev/null"], capture_output=True, text=True, check=True).stderr
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return dict(registers=int(re.search(r"Used (\d+) registers", log).group(1)),
                spill_stores=int(spills.group(1)), spill_loads=int(spills.group(2)),
                shared=compiled.metadata.shared)


def markdown(rows: list[dict]) -> str:
    """One line per kernel, head_dim and mask; a column per config: registers / shared KiB, spills flagged."""
    configs = sorted({(r["num_warps"], r["num_stages"]) for r in rows})
    head = "| kernel | head_dim | mask | " + " | ".join(f"{w} warps, {s} stages" for w, s in configs) + " |"
    lines = [head, "|" + "---|" * (3 + len(configs))]
    cells: dict[tuple, dict] = {}
    for r in rows:
        spill = f", SPILLS {r['spill_stores']}/{r['spill_loads']} B" if r["spill_stores"] or r["spill_loads"] else ""
        cells.setdefault((r["kernel"], r["head_dim"], r["mask"]), {})[(r["num_warps"], r["num_stages"])] = \
            f"{r['registers']} / {r['shared'] / 1024:.0f}{spill}"
    for (kernel, head_dim, mask), by_config in cells.items():
        lines.append(f"| {kernel} | {head_dim} | {mask} | " + " | ".join(by_config.get(c, "-") for c in configs) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--head-dims", default="64,128")
    p.add_argument("--masks", default="row,column", help=f"layer kinds among {sorted(MASKS)}")
    p.add_argument("--kernels", default="forward,dq,dkdv")
    p.add_argument("--configs", choices=("all", "first"), default="all", help="autotuning configs to compile")
    p.add_argument("--arch", type=int, default=90)
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--markdown", action="store_true", help="also print the rows as a Markdown table")
    args = p.parse_args()
    rows = []
    print("kernel  head_dim  mask    warps  stages  registers  spill bytes (st/ld)  shared bytes")
    for head_dim in map(int, args.head_dims.split(",")):
        for kind in args.masks.split(","):
            for name, (kernel, kargs, consts) in launches(head_dim, kind, torch.bfloat16).items():
                if name not in args.kernels.split(","):
                    continue
                configs = tuned_configs(kernel, consts)
                configs = configs if args.configs == "all" else configs[:1]
                for config in configs:
                    res = resources(compile_variant(kernel, kargs, consts, config, args.arch), args.arch)
                    rows.append(dict(kernel=name, head_dim=head_dim, mask=kind, num_warps=config.num_warps,
                                     num_stages=config.num_stages, **res))
                    print(f"{name:7s} {head_dim:8d}  {kind:6s}  {config.num_warps:5d}  {config.num_stages:6d}  "
                          f"{res['registers']:9d}  {res['spill_stores']:>9d}/{res['spill_loads']:<9d}  "
                          f"{res['shared']:12d}", flush=True)
    print(f"sm_{args.arch} ok: {len(rows)} variants, bf16, 12b shape")
    if args.markdown:
        print("\nregisters per thread / shared memory KiB\n" + markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
