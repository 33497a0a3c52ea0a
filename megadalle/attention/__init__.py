"""Attention masks (pure definitions) and the dispatch that runs them.

`attend` is imported from the dispatch on first use (PEP 562): the configs import the masks through this
package, and the dispatch imports torch._dynamo (its `assume_constant_result` marking), triton with it,
seconds that `megadalle <verb> --help` and a config check need not pay.
"""
from megadalle.attention.masks import MASK_KINDS, MaskSpec, allowed, dense_mask, layer_kinds

__all__ = ["attend", "MASK_KINDS", "MaskSpec", "allowed", "dense_mask", "layer_kinds"]


def __getattr__(name: str):
    if name != "attend":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from megadalle.attention.dispatch import attend

    globals()["attend"] = attend
    return attend
