"""The discrete VAE of DALL-E (arXiv 2102.12092, section 2.1 and appendix A).

The encoder turns a 256x256 image into a 32x32 grid of logits over 8192 codes; the decoder turns a
grid of (one-hot or Gumbel-relaxed) codes into the parameters of a logit-Laplace distribution per
pixel channel. Both are stacks of bottleneck residual blocks whose residual branch is scaled by
1 / (number of blocks)^2, so the network starts close to the identity and trains stably without
normalisation layers. A plain nn.Module: the objective lives in `dvae_loss.py`, training outside.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from megadalle.config.dvae import DVAEConfig
from megadalle.models.dvae_loss import map_pixels, unmap_pixels


class Conv(nn.Conv2d):
    """A Conv2d that can run in channels_last (NHWC) while its parameters stay contiguous.

    oneDNN (and cuDNN) run NHWC convolutions faster: 1.35x per update of the demo's dVAE on 2 CPU cores
    (benchmarks/RESULTS.md, Demo, "channels_last"). DeepSpeed needs contiguous parameters, though: it broadcasts
    each one as a byte view and copies them into flat buffers, so storing the weights channels_last fails in
    `deepspeed.initialize`. Here the weight is copied to channels_last at each call instead (a copy the size of
    the weight; its gradient comes back through the copy) and the activations stay channels_last from layer to
    layer: every op between the convolutions keeps the layout.

    `fp32` computes in fp32 whatever the parameters' dtype: the encoder's last conv (the 8192 code logits) and
    the decoder's first (the code embedding), as the paper and OpenAI's released dVAE keep them. Under bf16
    training (DeepSpeed casts the whole module) a bf16 logit conv moved the argmax code of 3% of grid cells.
    """

    def __init__(self, n_in: int, n_out: int, k: int, channels_last: bool, fp32: bool = False):
        super().__init__(n_in, n_out, k, padding=k // 2)
        self.channels_last, self.fp32 = channels_last, fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if self.fp32:
            x, weight, bias = x.float(), weight.float(), bias.float()
        if self.channels_last:
            layout = torch.channels_last
            x, weight = x.contiguous(memory_format=layout), weight.contiguous(memory_format=layout)
        return self._conv_forward(x, weight, bias)


def conv(n_in: int, n_out: int, k: int, channels_last: bool, fp32: bool = False) -> Conv:
    """A 'same' convolution (odd kernel) with the released dVAE's init: N(0, 1/fan_in) weights, zero bias.

    This keeps activations at unit scale through the stack (PyTorch's default shrinks them ~sqrt(3)x per
    layer), so the encoder's logits vary with the input from the start instead of being drowned by the
    Gumbel noise, and the codes carry information early in training.
    """
    layer = Conv(n_in, n_out, k, channels_last, fp32)
    nn.init.normal_(layer.weight, std=(n_in * k * k) ** -0.5)
    nn.init.zeros_(layer.bias)
    return layer


class Bottleneck(nn.Module):
    """x + post_gain * residual(x), the residual narrowing to n_out/4 channels in its middle.

    The encoder's residual starts with a 3x3 and ends with a 1x1; the decoder's mirrors it
    (`decoder=True`: 1x1 first, 3x3 last), as in OpenAI's released dVAE.
    """

    def __init__(self, n_in: int, n_out: int, post_gain: float, decoder: bool, channels_last: bool):
        super().__init__()
        hid = n_out // 4
        kernels = (1, 3, 3, 3) if decoder else (3, 3, 3, 1)
        widths = (n_in, hid, hid, hid, n_out)
        layers: list[nn.Module] = []
        for i, k in enumerate(kernels):
            layers += [nn.ReLU(), conv(widths[i], widths[i + 1], k, channels_last)]
        self.res = nn.Sequential(*layers)
        self.id = nn.Identity() if n_in == n_out else conv(n_in, n_out, 1, channels_last)
        self.post_gain = post_gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.id(x) + self.post_gain * self.res(x)


def _groups(cfg: DVAEConfig, widths: list[int], n_in: int, resample: Callable[[], nn.Module], decoder: bool) -> nn.Sequential:
    """`n_groups` groups of blocks with a `resample()` layer (pool or upsample) between consecutive groups."""
    post_gain = 1.0 / (cfg.n_groups * cfg.n_blk_per_group) ** 2
    layers: list[nn.Module] = []
    for g, width in enumerate(widths):
        for _ in range(cfg.n_blk_per_group):
            layers.append(Bottleneck(n_in, width, post_gain, decoder, cfg.channels_last))
            n_in = width
        if g < len(widths) - 1:
            layers.append(resample())
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """Pixels mapped into (eps, 1-eps), [B, 3, S, S] -> code logits [B, vocab, S/d, S/d] (fp32: the last conv
    computes in fp32 whatever the stack's dtype)."""

    def __init__(self, cfg: DVAEConfig):
        super().__init__()
        widths = [cfg.n_hid * 2**g for g in range(cfg.n_groups)]
        self.net = nn.Sequential(
            conv(3, cfg.n_hid, 7, cfg.channels_last),
            _groups(cfg, widths, cfg.n_hid, lambda: nn.MaxPool2d(2), decoder=False),
            nn.ReLU(),
            conv(widths[-1], cfg.vocab_size, 1, cfg.channels_last, fp32=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).contiguous()


class Decoder(nn.Module):
    """Codes [B, vocab, h, w] (one-hot or relaxed) -> logit-Laplace (mu, ln b) as [B, 6, S, S].

    The first 1x1 conv from the one-hot codes is a learned code embedding; `embed` uses it as
    a lookup table for integer codes, without building the one-hot tensor.
    """

    def __init__(self, cfg: DVAEConfig):
        super().__init__()
        widths = [max(cfg.n_hid * 2 ** (cfg.n_groups - 1 - g), cfg.decoder_min_width) for g in range(cfg.n_groups)]
        self.embedding = conv(cfg.vocab_size, cfg.n_init, 1, cfg.channels_last, fp32=True)
        self.net = nn.Sequential(
            _groups(cfg, widths, cfg.n_init, lambda: nn.Upsample(scale_factor=2, mode="nearest"), decoder=True),
            nn.ReLU(),
            conv(widths[-1], 6, 1, cfg.channels_last),
        )

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer codes [B, h, w] -> the embedding conv's output [B, n_init, h, w]."""
        table = self.embedding.weight[:, :, 0, 0].t()
        return (F.embedding(codes, table) + self.embedding.bias).permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Relaxed codes (any float dtype; the embedding computes in fp32) -> stats in the stack's dtype."""
        return self.net(self.embedding(z).to(self.net[-1].weight.dtype)).contiguous()


class DVAE(nn.Module):
    def __init__(self, cfg: DVAEConfig):
        super().__init__()
        cfg.validate()  # as Transformer(cfg): a size the pools do not divide built, and encoded a 33 px image to 4x4
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, S, S] in [0, 1] -> code logits [B, vocab, h, w]."""
        return self.encoder(map_pixels(images, self.cfg.eps))

    def forward(self, images: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: (code logits, decoder stats [B, 6, S, S]) with Gumbel-softmax codes at temperature tau."""
        logits = self.logits(images)
        z = F.gumbel_softmax(logits, tau=tau, hard=False, dim=1)
        return logits, self.decoder(z)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, S, S] in [0, 1] -> codes [B, h, w] (int64): the argmax, no Gumbel noise (as the paper).

        Pixels of another range (uint8, or floats in 0-255) are refused: mapped as they are, they gave other codes
        in silence. The range check costs one device sync, here only: training runs `logits` and `forward`, and
        encode's callers (the encode verb, the media grid) bring the codes to the host right after anyway."""
        if not images.is_floating_point():
            raise ValueError(f"images of dtype {images.dtype}: expected floating pixels in [0, 1] (uint8 images: "
                             "images.float() / 255)")
        low, high = (float(v) for v in torch.aminmax(images)) if images.numel() else (0.0, 0.0)
        if low < 0 or high > 1:
            raise ValueError(f"images in [{low:g}, {high:g}]: expected pixels in [0, 1] (0-255 pixels: divide by 255)")
        return self.logits(images).argmax(dim=1)

    def stats_to_images(self, stats: torch.Tensor) -> torch.Tensor:
        """Decoder output -> images in [0, 1]: sigmoid(mu) is the logit-Laplace's median, mapped back."""
        return unmap_pixels(torch.sigmoid(stats[:, :3].float()), self.cfg.eps).contiguous()

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, h, w] (any integer dtype) -> images [B, 3, S, S] in [0, 1] (used by sampling). Flat codes
        [B, h*w], as the sampler returns them, are refused by name (they failed in a permute), and so are floats
        (truncated in silence)."""
        if codes.dim() != 3:
            raise ValueError(f"codes of shape {list(codes.shape)}: expected [B, h, w] (flat codes [B, h*w] from "
                             "the sampler: megadalle.sample.decode(dvae, codes, grid_size))")
        if codes.is_floating_point() or codes.is_complex():
            raise ValueError(f"codes of dtype {codes.dtype}: expected integer codes")
        codes = codes.long()
        if codes.min() < 0 or codes.max() >= self.cfg.vocab_size:
            raise ValueError(f"codes outside [0, {self.cfg.vocab_size}): min {int(codes.min())}, max {int(codes.max())}")
        stats = self.decoder.net(self.decoder.embed(codes))
        return self.stats_to_images(stats)

    def flops_per_image(self) -> int:
        """Forward FLOPs of one image through encoder and decoder (see `flops_per_image` below)."""
        return flops_per_image(self.cfg)


def flops_per_image(cfg: DVAEConfig, part: str = "both") -> int:
    """Forward FLOPs of one image through the encoder, the decoder or both (2 x multiply-adds of the convs).

    Counted by running the model on the meta device with hooks, so it follows the code, not a formula.
    """
    with torch.device("meta"):
        model = DVAE(cfg)
        images = torch.empty(1, 3, cfg.image_size, cfg.image_size)
    total = 0

    def count(module: nn.Conv2d, inputs, output) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += 2 * k * module.in_channels * output[0].numel()

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        if part in ("encoder", "both"):
            model.encoder(images)
        if part in ("decoder", "both"):
            g = cfg.grid_size
            model.decoder(torch.empty(1, cfg.vocab_size, g, g, device="meta"))
    for h in handles:
        h.remove()
    return total


def load_dvae(path: str | Path, device: str | torch.device = "cpu") -> DVAE:
    """A trained dVAE from `save_weights` output (safetensors + config JSON; never unpickles), in eval mode and
    fp32 whatever the file holds (encode's codes are fp32's); weights that do not fit their config are one damaged
    line (`load_into`)."""
    from megadalle.config import build
    from megadalle.weights import load_into

    return load_into(path, "dvae", lambda config: DVAE(build(DVAEConfig, config, "dvae")), device,
                     torch.float32).eval()
