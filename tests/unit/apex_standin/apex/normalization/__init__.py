from .fused_layer_norm import FusedLayerNorm  # noqa: F401 - as apex's package re-exports it
