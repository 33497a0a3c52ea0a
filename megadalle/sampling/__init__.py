"""Sampling: logit filters, the KV-cached decoding loop, CLIP reranking, the image grid, and what lets a stopped
`generate` continue (stop signals, saved batches).

`megadalle/sample.py` is the `generate` verb; it loads the three models and calls these pieces.
"""
