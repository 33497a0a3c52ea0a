"""Block-sparse flash attention in Triton, driven by per-mask block tables (imports nothing from megadalle).

`build_layout` turns a mask into tables once; `sparse_attention(q, k, v, layout, scale)` runs it,
through the `megadalle::sparse_attention` custom op (op.py), so torch.compile can trace callers.
`sparse_attention_from(q, k, v, source, scale)` looks the layout up by q's length at run time,
through a registered layout source (sources.py), so a symbolic sequence length traces too.
`check_batch_and_heads`, `DTYPES` and `HEAD_DIMS` (inputs.py) say what the kernels accept.

Each name is imported from its module on first use (PEP 562), so importing this package costs
nothing, and the names above that need no triton (the layouts and the input checks) never import
it: the dispatch and the config check their inputs with them on any machine. To run the kernels on
a CPU, set TRITON_INTERPRET=1 before triton is first imported (by the kernels' modules, at the
first use of `sparse_attention`, `sparse_attention_from` or `register_layout_source`, or by anything
else, torch.compile included): triton reads it at import and when the kernels are decorated.
"""
from importlib import import_module

_MODULES = {
    "DTYPES": "inputs", "HEAD_DIMS": "inputs", "check_batch_and_heads": "inputs",
    "Layout": "layout", "build_layout": "layout", "dense_from_layout": "layout",
    "grid_column_major_order": "layout", "tile_mask": "layout",
    "sparse_attention": "attention",
    "LayoutSource": "sources", "register_layout_source": "sources", "sparse_attention_from": "sources",
}
"""Each public name and the module (of this package) that defines it."""

__all__ = sorted(_MODULES)


def __getattr__(name: str):
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_MODULES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_MODULES})
