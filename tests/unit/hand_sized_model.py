"""A Transformer small enough to count by hand, and its parameter counts worked out by hand.

A helper, not a test module: `plan`'s tests (tests/unit/test_plan.py) and its terms checked by hand
(test_plan_by_hand.py) predict for the same model, and neither should be the other's library.
"""
from megadalle.config.model import TransformerConfig
from megadalle.plan import Counts

# A hand-sized model: sequence 4 text + 2x2 image = 8 tokens, d_model 8, 4 blocks of 200 parameters,
# embeddings 100 and head 50 (950 in all). Logit elements per sample: 3 x 10 text + 4 x 6 image = 54.
CFG = TransformerConfig(text_len=4, text_vocab=10, grid_size=2, image_vocab=6, n_layers=4, n_heads=2, head_dim=4,
                        d_model=8)
COUNTS = Counts(total=950, embed=100, head=50, block=200, numels=(3, 5, 92, 50) + (150, 50) * 4, largest=150,
                block_largest=150, matrices=742)  # the 92, the 50 and the blocks' 150s; 208 in 1-d parameters
