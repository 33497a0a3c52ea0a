"""The tiny train-clip run whose every update the CLIP tests reproduce in plain PyTorch, and the ZeRO-3 setting that
partitions every parameter.

AdamW runs with eps far above every gradient, where its first step is lr/eps times the gradient itself. A helper,
not a test module: the contrastive loss's tests (test_clip_negatives.py) and the logit scale's clamp
(test_clip_scale.py) train the same run, and neither should be the other's library.
"""
OVERRIDES = ["clip=tiny", "clip.image_size=16", "clip.text_len=8", "trainer=tiny", "logger=none", "seed=3",
             "trainer.warmup_steps=0", "trainer.decay=constant", "trainer.lr=1e6", "trainer.eps=1e6",
             "trainer.weight_decay=0", "trainer.grad_clip=0", "trainer.micro_batch=2", "trainer.grad_accum=2"]
PARTITIONED = "++deepspeed.extra.zero_optimization.stage3_param_persistence_threshold=0"
