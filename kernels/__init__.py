"""Block-sparse flash attention in Triton, driven by per-mask block tables (imports nothing from megadalle).

`build_layout` turns a mask into tables once; `sparse_attention(q, k, v, layout, scale)` runs it,
through the `megadalle::sparse_attention` custom op (op.py), so torch.compile can trace callers.
`sparse_attention_from(q, k, v, source, scale)` looks the layout up by q's length at run time,
through a registered layout source (sources.py), so a symbolic sequence length traces too.
To run the kernels on a CPU, set TRITON_INTERPRET=1 before triton is first imported (by this
package or anything else): triton reads it at import and when the kernels are decorated.
"""
from .attention import DTYPES, HEAD_DIMS, sparse_attention
from .layout import Layout, build_layout, dense_from_layout, grid_column_major_order, tile_mask
from .sources import LayoutSource, register_layout_source, sparse_attention_from

__all__ = ["DTYPES", "HEAD_DIMS", "Layout", "LayoutSource", "build_layout", "dense_from_layout",
           "grid_column_major_order", "register_layout_source", "sparse_attention", "sparse_attention_from",
           "tile_mask"]
