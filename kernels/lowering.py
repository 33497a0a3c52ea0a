"""Compile every kernel for a GPU target on a machine without one: `python -m megadalle.kernels.lowering`.

The CPU interpreter proves the kernels' arithmetic but not that Triton can lower them (layouts,
dtypes of loop-carried values, shared memory). Triton's own compiler with the bundled ptxas
can, given only a target, so CI without a GPU still catches a kernel that would not build.
Run it with TRITON_INTERPRET unset: the interpreter replaces the kernels with Python functions.
"""
from __future__ import annotations

import argparse

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import backward, forward

KERNELS = {"forward": forward._fwd_kernel, "dq": backward._dq_kernel, "dkdv": backward._dkdv_kernel}
_TABLES = ("full_idx", "part_idx", "part_tile", "t_full_idx", "t_part_idx", "t_part_tile")
_FLOAT_PTRS = ("lse_ptr", "delta_ptr")
_DATA_PTRS = ("q_ptr", "k_ptr", "v_ptr", "o_ptr", "do_ptr", "dq_ptr", "dk_ptr", "dv_ptr")


def _signature(fn, dtype: str, constexprs: dict) -> dict:
    types = {}
    for name in fn.arg_names:
        if name in constexprs:
            types[name] = "constexpr"
        elif name in _DATA_PTRS:
            types[name] = "*" + dtype
        elif name in _FLOAT_PTRS:
            types[name] = "*fp32"
        elif name.endswith("_ptr") or name in _TABLES:
            types[name] = "*i32"
        else:
            types[name] = "fp32" if name in ("qk_scale", "scale") else "i32"
    return types


def lower(kernel: str, dtype: str, head_dim: int, block: int, permuted: bool, arch: int = 90,
          num_warps: int = 4, num_stages: int = 2) -> int:
    """Compile one kernel variant to a cubin for sm_`arch`; returns its shared memory in bytes."""
    fn = KERNELS[kernel]
    fn = getattr(fn, "fn", fn)  # the JITFunction under the autotuner
    constexprs = dict(HEAD_DIM=head_dim, BLOCK_M=block, BLOCK_N=block, WORDS=(block + 31) // 32,
                      PERMUTED=permuted, PRECISION="ieee" if dtype == "fp32" else "tf32")
    src = ASTSource(fn=fn, signature=_signature(fn, dtype, constexprs),
                    constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                              options=dict(num_warps=num_warps, num_stages=num_stages))
    return compiled.metadata.shared


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dtypes", default="bf16,fp32")
    p.add_argument("--head-dims", default="64")
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--arch", type=int, default=90)
    args = p.parse_args()
    for dtype in args.dtypes.split(","):
        for head_dim in map(int, args.head_dims.split(",")):
            for kernel in KERNELS:
                permuted = dtype != "fp32"  # each dtype once, the two addressings between them
                shared = lower(kernel, dtype, head_dim, args.block, permuted, args.arch)
                print(f"{kernel:8s} {dtype} head_dim {head_dim} permuted={permuted}: sm_{args.arch} ok, "
                      f"{shared} B shared memory")


if __name__ == "__main__":
    main()
