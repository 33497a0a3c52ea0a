"""A stand-in for NVIDIA apex with its names and the state layout megadalle met (after hunt-z's, /tmp/hunt-z/fake):
FusedLayerNorm imports its CUDA extension when constructed and calls it in forward, fused_layer_norm_affine imports
it at its call; FusedAdam counts its step per param group. The extension comes from ok/ (works) or badcall/ (fails
at its call), or is missing (noext)."""
