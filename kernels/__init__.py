"""Block-sparse flash attention in Triton, driven by per-mask block tables (imports nothing from megadalle).

`build_layout` turns a mask into tables once; `sparse_attention(q, k, v, layout, scale)` runs it,
through the `megadalle::sparse_attention` custom op (op.py), so torch.compile can trace callers.
To run the kernels on a CPU, set TRITON_INTERPRET=1 before triton is first imported (by this
package or anything else): triton reads it at import and when the kernels are decorated.
"""
from .attention import DTYPES, HEAD_DIMS, sparse_attention
from .layout import Layout, build_layout, dense_from_layout, grid_column_major_order, tile_mask

__all__ = ["DTYPES", "HEAD_DIMS", "Layout", "build_layout", "dense_from_layout", "grid_column_major_order",
           "sparse_attention", "tile_mask"]
