"""CLIP, the reranker: a causal text Transformer and a ViT image encoder trained contrastively.

DALL-E draws many samples per caption and keeps those CLIP scores highest, so CLIP only has to
judge image-caption agreement; a small ViT suffices for the image tower. The contrastive loss
compares every image with every caption of the micro-batch across ranks: `gather` concatenates the
features of all ranks with gradients flowing back to their owners, so training on W ranks is the
same optimisation problem as training on one with a W times larger micro-batch. With gradient
accumulation the trainer computes this loss over the whole update's embeddings of every rank and backs
it up one micro-batch at a time (train/grad_cache.py), so accumulating A micro-batches is the same
problem as one A times larger (`clip.negatives=micro_batch`: each micro-batch its own problem instead).
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from megadalle.config.clip import ClipConfig
from megadalle.models.fp32_init import Conv2d, Embedding, Linear, fp32_parameter, reset_in_fp32


def _normal(std: float):
    """CLIP's N(0, std) tables, drawn as `torch.randn(...) * std` draws them (fp32_init.fp32_parameter's init)."""
    return lambda drawn: drawn.normal_().mul_(std)


class TokenEmbedding(Embedding):
    """The text tower's token table drawn N(0, 0.02) as CLIP's: torch's N(0, 1) made the tokens 100 times the
    N(0, 0.01) positions, leaving the order ~1% of each input (CLIP: 0.02 against 0.01)."""

    def reset_parameters(self) -> None:
        reset_in_fp32(self, lambda: _normal(0.02)(self.weight.data))


class Block(nn.Module):
    """Pre-LayerNorm Transformer block; `causal` selects the text tower's mask."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = Linear(width, 3 * width), Linear(width, width)
        self.mlp = nn.Sequential(Linear(width, 4 * width), nn.GELU(), Linear(4 * width, width))

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.ln2(x))


class TextEncoder(nn.Module):
    """Causal Transformer over BPE ids; the caption's feature is the state at its last non-pad token."""

    def __init__(self, cfg: ClipConfig):
        super().__init__()
        self.pad_id, self.text_len = cfg.text_pad_id, cfg.text_len
        self.tok = TokenEmbedding(cfg.text_vocab, cfg.text_width)
        self.pos = fp32_parameter((cfg.text_len, cfg.text_width), _normal(0.01))
        self.blocks = nn.ModuleList(Block(cfg.text_width, cfg.text_heads) for _ in range(cfg.text_layers))
        self.ln = nn.LayerNorm(cfg.text_width)
        self.proj = Linear(cfg.text_width, cfg.embed_dim, bias=False)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        if text.dim() != 2 or text.shape[1] > self.text_len:
            raise ValueError(f"text of shape {list(text.shape)}: expected ids [N, L] with L at most text_len="
                             f"{self.text_len} (tokenizer.encode(caption, {self.text_len}) cuts and pads to it)")
        x = self.tok(text) + self.pos[: text.shape[1]]
        for block in self.blocks:
            x = block(x, causal=True)
        # Causal attention: the last real token has read the whole caption (CLIP reads its EOT token).
        last = ((text != self.pad_id).long().cumsum(1).argmax(1))
        return self.proj(self.ln(x[torch.arange(text.shape[0], device=text.device), last]))


def square_input(image: torch.Tensor, size: int) -> torch.Tensor:
    """Images [N, 3, H, W] in [0, 1] as training's loader gives them to CLIP (data/images.resize_center_crop): the
    short side resized to `size` (bicubic, antialiased, clamped to [0, 1]: bicubic overshoots), the centred square
    cut. A non-square image was squashed (a 32x48 scored 0.625 where its centre, as CLIP trained on it, scored
    0.771), and a bilinear resize put the reranked decodes further from the images CLIP trained on (scores 0.013
    apart on average, against 0.008 bicubic)."""
    h, w = image.shape[-2:]
    if (h, w) == (size, size):
        return image
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))  # resize_center_crop's whole-image size
    image = F.interpolate(image, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    return image[..., top:top + size, left:left + size]


class ImageEncoder(nn.Module):
    """ViT: patches -> Transformer -> class token -> projection. Input in [0, 1], any size (`square_input`), in
    any floating dtype (read in the tower's own)."""

    def __init__(self, cfg: ClipConfig):
        super().__init__()
        self.size = cfg.image_size
        n_patches = (cfg.image_size // cfg.patch_size) ** 2
        self.patch = Conv2d(3, cfg.vision_width, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.cls = fp32_parameter((cfg.vision_width,), _normal(0.02))
        self.pos = fp32_parameter((n_patches + 1, cfg.vision_width), _normal(0.01))
        self.ln_pre, self.ln_post = nn.LayerNorm(cfg.vision_width), nn.LayerNorm(cfg.vision_width)
        self.blocks = nn.ModuleList(Block(cfg.vision_width, cfg.vision_heads) for _ in range(cfg.vision_layers))
        self.proj = Linear(cfg.vision_width, cfg.embed_dim, bias=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        image = square_input(image, self.size).to(self.patch.weight.dtype)
        x = self.patch(image * 2 - 1).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], dim=1) + self.pos
        x = self.ln_pre(x)
        for block in self.blocks:
            x = block(x, causal=False)
        return self.proj(self.ln_post(x[:, 0]))


class CLIP(nn.Module):
    """Both towers and the learned temperature (stored as log(1/T), CLIP's parametrisation)."""

    def __init__(self, cfg: ClipConfig):
        super().__init__()
        cfg.validate()  # as Transformer(cfg): a patch size the image does not divide built, and dropped pixels
        self.cfg = cfg
        self.text = TextEncoder(cfg)
        self.image = ImageEncoder(cfg)
        # Shape [1], not a 0-dim scalar: DeepSpeed's initial broadcast cannot view a 0-dim tensor as bytes.
        self.logit_scale = fp32_parameter((1,), lambda drawn: drawn.fill_(math.log(1 / cfg.init_temperature)))

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(text), dim=-1)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(image), dim=-1)

    def scale(self) -> torch.Tensor:
        """exp of the parameter, which the trainer keeps within `logit_scale_range` (ClipTask.after_update)."""
        return self.logit_scale.exp()[0]

    def logit_scale_range(self) -> tuple[float, float]:
        """[0, ln max_logit_scale], where the trainer clamps `logit_scale` after every update, as CLIP and open_clip do:
        a cap inside the forward (`exp().clamp(max=)`) has no gradient past it, so a scale that reached it stayed
        there whatever the loss wanted later."""
        return 0.0, math.log(self.cfg.max_logit_scale)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image embeddings, text embeddings, logit scale). The scale is read here, inside the module's call:
        ZeRO-3 gathers `logit_scale` only while this module runs, and a loss that read it afterwards saw an
        empty partition (the validation loss, called outside DeepSpeed's engine, failed at its first batch)."""
        return self.encode_image(image), self.encode_text(text), self.scale()

    def loss(self, image: torch.Tensor, text: torch.Tensor,
             sample: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """`contrastive_loss` of the pairs; `sample` their sample ids (the loader's), to tell copies apart."""
        return contrastive_loss(*self(image, text), text, sample)

    @torch.no_grad()
    def score(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each image with its caption (one row of `text` each, or one for all)."""
        img, txt, _ = self(image, text)
        return (img * txt).sum(-1)


# `gather`'s all_gather is deprecated, but its suggested successor (functional collectives) reduce-scatters in the
# backward, which gloo lacks. Its warning is filtered once, here: a `warnings.catch_warnings()` around each call reset
# Python's once-per-location registry on leaving it, so every other warning (DeepSpeed's ZeRO all-gather deprecation)
# printed again on every rank at every update.
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated",
                        category=FutureWarning)


def gather(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' rows concatenated in rank order (gradients flow back to each owner), and this rank's offset."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0), dist.get_rank() * x.shape[0]


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, text: torch.Tensor | None = None,
                     sample: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Symmetric InfoNCE of this rank's pairs against the global batch.

    Each rank scores its own images against all captions and its own captions against all
    images; the mean of the ranks' losses is the single-process loss on the global batch, so the
    usual data-parallel gradient average gives the single-process gradient. Assumes equal
    per-rank batch sizes. A caption that appears twice in the batch is a negative of the other's
    image, as in CLIP's loss (with few distinct captions, as the demo's, the loss stays above 0).
    One sample read twice is another matter: a global batch straddling an epoch boundary can hold it twice
    (data/order.py), and its copy is no negative but the pair itself. Given `sample`, this rank's rows' sample ids
    (the loader's `sample`), each pair is contrasted with the de-duplicated batch (`repeats`): each row's loss is
    its own in the batch without repeats. A batch without repeats masks nothing and gives the same bits.

    clip_acc: the share of this rank's images whose best-scoring caption is their own. Given `text`,
    the captions' token ids, picking a copy of its own caption (the same ids) is a hit: a perfect
    CLIP scored one miss per repeat (argmax takes the first of tied copies), 0.52 on the demo's
    batches of 64 pairs of 40 captions.
    """
    all_img, offset = gather(img)
    all_txt, _ = gather(txt)
    labels = torch.arange(img.shape[0], device=img.device) + offset
    logits_i = scale * img @ all_txt.t()
    logits_t = scale * txt @ all_img.t()
    left_out = None if sample is None else repeats(sample.to(img.device), labels)
    if left_out is not None:
        logits_i, logits_t = logits_i.masked_fill(left_out, -math.inf), logits_t.masked_fill(left_out, -math.inf)
    loss = (F.cross_entropy(logits_i, labels) + F.cross_entropy(logits_t, labels)) / 2
    accuracy = picked_own_caption(logits_i.argmax(-1), labels, text).float().mean()
    return loss, {"clip_loss": loss.item(), "clip_acc": accuracy.item(), "temperature": 1 / scale.item()}


def picked_own_caption(chosen: torch.Tensor, labels: torch.Tensor, text: torch.Tensor | None) -> torch.Tensor:
    """Per image: whether the chosen caption (an index into the global batch) is its own or, given this rank's
    token ids `text`, one of the same ids."""
    if text is None:
        return chosen == labels
    all_text, _ = gather(text.to(chosen.device))
    return (all_text[chosen] == all_text[labels]).all(-1)


def repeats(sample: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
    """[this rank's rows, global batch]: True where a column repeats a sample, for the loss to leave out; None where
    the global batch holds no repeat (nearly every batch), leaving the loss as it is without `sample`. Each row
    keeps its own pair and one column of every other sample (its first copy), so it sees the de-duplicated batch:
    another copy of its own sample is the pair itself, not a negative, and a sample read twice is one negative,
    not two. `sample`: this rank's sample ids, gathered as `picked_own_caption` gathers the token ids. Columns
    index captions in one loss and images in the other, both in the global batch's order: one mask serves both.
    Built from each column's distinct sample, in memory of this rank's rows times the global batch: a [global,
    global] comparison took 515 MiB at 16384 pairs, 8 GiB at 65536, every update, for the large global batches
    `clip.negatives=update` is for."""
    all_sample, _ = gather(sample)
    distinct, which = torch.unique(all_sample, return_inverse=True)
    count = all_sample.shape[0]
    if distinct.shape[0] == count:
        return None
    columns = torch.arange(count, device=labels.device)
    first = torch.full_like(distinct, count).scatter_reduce(0, which, columns.to(distinct.dtype), "amin")
    later_copy = first[which] != columns
    own_sample = which[labels][:, None] == which[None, :]
    own_pair = columns[None, :] == labels[:, None]
    return torch.where(own_sample, ~own_pair, later_copy[None, :])
