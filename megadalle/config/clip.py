"""CLIP's configuration (conf/clip/*.yaml): the text and image towers of the reranker."""
from __future__ import annotations

from dataclasses import dataclass

from megadalle.config import check

NEGATIVES = ("update", "micro_batch")


@dataclass
class ClipConfig:
    text_len: int = 64
    """Text positions; longer captions are truncated, shorter ones padded with `text_pad_id`."""
    text_vocab: int = 16384
    """BPE vocabulary size: at least the pieces of the tokenizer the captions are encoded with (checked)."""
    text_pad_id: int = 0
    """Padding id (the tokenizer's pad); the caption's feature is read at its last non-pad token."""
    text_width: int = 512
    """Residual width of the text tower (a multiple of text_heads); 512 as OpenAI's ViT-B/16 CLIP."""
    text_layers: int = 12
    """Transformer blocks of the text tower (12 as ViT-B/16 CLIP's)."""
    text_heads: int = 8
    """Attention heads of the text tower, each text_width / text_heads wide (8 as ViT-B/16 CLIP's)."""
    image_size: int = 224
    """Side of the square input image: train-clip loads its images at it (where data.image_size is null, not at the
    size stored), and the reranker cuts the centred square of other sizes and resizes it to it, as the loader does."""
    patch_size: int = 16
    """ViT patch side; image_size must be a multiple of it."""
    vision_width: int = 768
    """Residual width of the image tower (a ViT; a multiple of vision_heads); 768 as ViT-B/16 CLIP's."""
    vision_layers: int = 12
    """Transformer blocks of the image tower (12 as ViT-B/16 CLIP's)."""
    vision_heads: int = 12
    """Attention heads of the image tower, each vision_width / vision_heads wide (12 as ViT-B/16 CLIP's)."""
    embed_dim: int = 512
    """Width of the joint embedding space both towers project into."""
    init_temperature: float = 0.07
    """Softmax temperature at initialisation (CLIP's), in (0, 1]; learned as a log-scale afterwards."""
    max_logit_scale: float = 100.0
    """Cap on 1/temperature, as in CLIP, so the learned scale cannot blow up training."""
    negatives: str = "update"
    """What each pair is contrasted against under trainer.grad_accum > 1: `update`, the whole update's batch on every
    rank (as one batch of micro_batch x grad_accum per rank would be: gradient caching, one more forward per
    micro-batch); `micro_batch`, only the pairs of the same micro-batch on every rank (no extra forward, fewer
    negatives). Without accumulation both are the same."""

    def validate(self, where: str = "clip") -> None:
        for name in ("text_len", "text_vocab", "text_width", "text_layers", "text_heads", "image_size",
                     "patch_size", "vision_width", "vision_layers", "vision_heads", "embed_dim"):
            value = getattr(self, name)
            check(value > 0, f"{where}.{name}", value, "must be positive")
        check(0 <= self.text_pad_id < self.text_vocab, f"{where}.text_pad_id", self.text_pad_id,
              f"must be a token id below text_vocab={self.text_vocab}")
        check(self.text_width % self.text_heads == 0, f"{where}.text_width", self.text_width,
              f"must be a multiple of text_heads={self.text_heads}")
        check(self.vision_width % self.vision_heads == 0, f"{where}.vision_width", self.vision_width,
              f"must be a multiple of vision_heads={self.vision_heads}")
        check(self.image_size % self.patch_size == 0, f"{where}.image_size", self.image_size,
              f"must be a multiple of patch_size={self.patch_size}")
        check(self.negatives in NEGATIVES, f"{where}.negatives", self.negatives, f"expected one of {NEGATIVES}")
        check(0 < self.init_temperature <= 1, f"{where}.init_temperature", self.init_temperature,
              "must be in (0, 1]: the trainer keeps the logit scale 1/temperature at 1 or more after every update "
              "(as CLIP does), so a higher temperature would become 1 at the first update")
        check(self.max_logit_scale >= 1 / self.init_temperature, f"{where}.max_logit_scale", self.max_logit_scale,
              f"must be at least 1/init_temperature = {1 / self.init_temperature:g}")


SCHEMAS = {"clip": ClipConfig}
