"""CLIP reranking: score every sample against its caption, keep the best.

The paper draws 512 samples per caption and shows the ones CLIP ranks highest; the Transformer's
likelihood alone would favour bland images, CLIP's judgement of image-caption agreement does not.

Two rerankers share one interface, `scores(images in [0, 1], prompt) -> [N]` (cosine similarity):
megadalle's own CLIP (trained by `train-clip`, on megadalle's BPE ids), and any open_clip
architecture (`clip_model=open_clip:<arch>`) with its weights from a local file. An open_clip model
is built with `pretrained=None` and filled from `clip_weights` (safetensors, or a torch state dict
read with weights_only=True): nothing is ever downloaded. It brings its own tokenizer, input size
and normalisation, applied here to the decoded samples.
"""
from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from megadalle.errors import UserError
from megadalle.models.clip import square_input

OPEN_CLIP = "open_clip:"


class RerankerError(UserError, ValueError):
    """A reranker that cannot be built or fed as asked (the message names the key or argument and its value)."""


class Reranker(Protocol):
    def scores(self, images: torch.Tensor, prompt: str) -> torch.Tensor: ...


def check_images(images) -> None:
    """`images` as the rerankers take them: float [N, 3, H, W] in [0, 1]. Pixels in 0..255 scored wrong without a
    word (0.771 -> -0.269 for a matched pair), and other shapes or dtypes failed deep in the model, naming neither."""
    expected = "expected floats [N, 3, H, W] in [0, 1]"
    if not isinstance(images, torch.Tensor):
        raise RerankerError(f"images: a {type(images).__name__}, {expected}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise RerankerError(f"images of shape {list(images.shape)}: {expected} (RGB, channels first; one image "
                            "[3, H, W] as images[None])")
    if not images.is_floating_point():
        raise RerankerError(f"images of dtype {images.dtype}: {expected} (pixels 0..255 as images.float() / 255)")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise RerankerError(f"images with values from {images.min().item():.4g} to {images.max().item():.4g}: "
                            f"{expected} (pixels 0..255 as images / 255)")


@torch.no_grad()
def clip_scores(clip, images: torch.Tensor, text: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Cosine similarity (float32) of each image [N, 3, H, W] in [0, 1] (any size and floating dtype: the image
    tower crops and resizes it as training does, and reads it in its own dtype) with one caption's CLIP ids
    [text_len] -> [N]."""
    check_images(images)
    device = next(clip.parameters()).device
    txt = clip.encode_text(text[None].to(device)).float()
    scores = [(clip.encode_image(images[i:i + batch_size].to(device)).float() * txt).sum(-1)
              for i in range(0, len(images), batch_size)]
    return torch.cat(scores)


class MegadalleClip:
    """megadalle's CLIP with the BPE tokenizer it was trained on."""

    def __init__(self, clip, tokenizer):
        self.clip, self.tokenizer = clip, tokenizer

    def scores(self, images: torch.Tensor, prompt: str) -> torch.Tensor:
        return clip_scores(self.clip, images, torch.tensor(self.tokenizer.encode(prompt, self.clip.cfg.text_len)))


class OpenClip:
    """An open_clip model: its tokenizer, its input size (bicubic resize) and its mean/std normalisation."""

    def __init__(self, model, tokenizer, image_size: int, mean, std, batch_size: int = 64):
        self.model, self.tokenizer, self.image_size, self.batch_size = model, tokenizer, image_size, batch_size
        device = next(model.parameters()).device
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, H, W] in [0, 1] -> the model's input: the centred square resized, as open_clip's own
        preprocessing (and megadalle's CLIP, `square_input`) does."""
        return (square_input(images, self.image_size) - self.mean) / self.std

    @torch.no_grad()
    def scores(self, images: torch.Tensor, prompt: str) -> torch.Tensor:
        check_images(images)
        device = self.mean.device
        text = F.normalize(self.model.encode_text(self.tokenizer([prompt]).to(device)).float(), dim=-1)
        out = []
        for i in range(0, len(images), self.batch_size):
            batch = self.preprocess(images[i:i + self.batch_size].to(device))
            out.append((F.normalize(self.model.encode_image(batch).float(), dim=-1) * text).sum(-1))
        return torch.cat(out)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file (weights_only: never unpickles code); open_clip's training
    checkpoints ({"state_dict": ...} with DDP's "module." prefix) are unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise RerankerError(f"clip_weights={str(path)!r}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # cut short, another format, or objects weights_only will not unpickle: no file named
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise RerankerError(f"clip_weights={str(path)!r}: cannot be read as a state dict of tensors "
                            f"({type(err).__name__}: {first}); pass open_clip's weights file (.safetensors, or a torch "
                            "file of tensors), copied again if it was cut short") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise RerankerError(f"clip_weights={str(path)!r}: holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_open_clip(arch: str, weights: str | Path | None, device: torch.device | str = "cpu") -> OpenClip:
    """open_clip architecture `arch` filled from the local file `weights` (strictly: every tensor must match)."""
    try:
        import open_clip
    except Exception as err:  # not installed, or its torchvision does not load against this torch
        raise RerankerError(f"clip_model=open_clip:{arch} needs an importable open_clip (`scripts/setup.sh open_clip` "
                            f"in the megadalle checkout installs it for this torch): {type(err).__name__}: {err}") from None
    if arch not in open_clip.list_models():
        raise RerankerError(f"clip_model=open_clip:{arch}: unknown architecture; open_clip has e.g. "
                            f"{open_clip.list_models()[:6]}")
    if not weights:
        raise RerankerError(f"clip_model=open_clip:{arch} needs clip_weights=FILE (a local .safetensors or .pt "
                            f"state dict): megadalle never downloads weights")
    text_cfg = open_clip.get_model_config(arch).get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name"):
        raise RerankerError(f"clip_model=open_clip:{arch} uses the Hugging Face tokenizer "
                            f"{text_cfg['hf_tokenizer_name']!r}, which open_clip downloads; pick an architecture "
                            f"with open_clip's bundled tokenizer (e.g. ViT-B-32, RN50)")
    offline = {k: False for k in ("pretrained_image", "pretrained_text")
               if k in inspect.signature(open_clip.create_model).parameters}  # no base tower weights fetched
    model = open_clip.create_model(arch, pretrained=None, device="cpu", **offline)
    try:
        model.load_state_dict(read_state_dict(weights), strict=True)
    except RuntimeError as err:
        raise RerankerError(f"clip_weights={str(weights)!r} does not fit open_clip:{arch}: "
                            f"{str(err).splitlines()[0]}") from None
    model = model.float().eval().to(device)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    return OpenClip(model, open_clip.get_tokenizer(arch), int(size), mean, std)


def load_reranker(clip_model: str, weights: str | Path | None, tokenizer, device: torch.device | str = "cpu",
                  read_model=None) -> Reranker:
    """`clip_model`: "megadalle" (its CLIP from `weights`, read by `read_model(path, "clip")`, with `tokenizer`)
    or "open_clip:<arch>" (open_clip's, from the local file `weights`)."""
    if clip_model.startswith(OPEN_CLIP):
        return load_open_clip(clip_model[len(OPEN_CLIP):], weights, device)
    if clip_model != "megadalle":
        raise RerankerError(f"clip_model={clip_model!r}: expected megadalle or open_clip:<arch>")
    return MegadalleClip(read_model(weights, "clip").to(device), tokenizer)


def as_reranker(clip, tokenizer) -> Reranker:
    """A reranker as is, or megadalle's CLIP module wrapped with its tokenizer (an open_clip module brings its own
    tokenizer and preprocessing: it comes as its reranker, e.g. `load_pipeline(...).reranker`)."""
    if hasattr(clip, "scores"):
        return clip
    if not hasattr(clip, "encode_text") or not hasattr(clip, "cfg"):
        raise RerankerError(f"{type(clip).__name__} is not megadalle's CLIP: pass a reranker (an object with "
                            "scores(images, prompt), such as load_pipeline(...).reranker)")
    return MegadalleClip(clip, tokenizer)


def rank(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the `keep` highest scores, best first (ties keep sample order). A NaN score (a CLIP gone to NaN
    weights) ranks last: torch sorts it above every number, and such a sample was kept as the best."""
    if keep <= 0:
        raise ValueError(f"keep={keep} must be positive")
    order = torch.sort(scores.nan_to_num(nan=-math.inf), descending=True, stable=True).indices
    return order[:keep]
