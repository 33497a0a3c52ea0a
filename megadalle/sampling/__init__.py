"""Sampling: logit filters, the KV-cached decoding loop, CLIP reranking and the image grid.

`megadalle/sample.py` is the `generate` verb; it loads the three models and calls these pieces.
"""
