"""The model whose FLOPs per token tests/unit/test_flops_by_hand.py sums by hand: 3 text positions, then a 3 x 3
image grid in raster order (12 positions), layers row, column and conv (the last).

A helper, not a test module: the FLOPs summed by hand and `plan`'s step time checked by hand
(test_plan_by_hand.py) use the same model, and neither test module should be the other's library.
"""
from megadalle.config.model import TransformerConfig

CFG = TransformerConfig(text_len=3, text_vocab=10, grid_size=3, image_vocab=6, n_layers=3, n_heads=2, head_dim=4,
                        d_model=8, mlp_ratio=4, attention_pattern=["row", "column"], last_layer_attention="conv",
                        conv_kernel=3, conv_wrap=False)
