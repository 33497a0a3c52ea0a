"""The dVAE's objective: the pixel map, the logit-Laplace likelihood (or a fixed-scale Gaussian), the KL
to the uniform prior, and the cosine schedules of β and τ (arXiv 2102.12092, section 2.1 and A.2; the
learning rate's is the trainer's, megadalle.train.schedule).

Everything here is a pure function (of tensors, or of the step), so the tests check each one
against its formula and the trainer can resume at any step without state.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from megadalle.config.dvae import DVAEObjective

LN2 = math.log(2.0)


def map_pixels(x: torch.Tensor, eps: float) -> torch.Tensor:
    """[0, 1] -> [eps, 1 - eps]: the logit-Laplace lives on (0, 1), so pixels must stay off 0 and 1."""
    return (1 - 2 * eps) * x + eps


def unmap_pixels(x: torch.Tensor, eps: float) -> torch.Tensor:
    """The inverse of `map_pixels`, clamped to [0, 1] (the decoder's median can leave [eps, 1-eps])."""
    return ((x - eps) / (1 - 2 * eps)).clamp(0.0, 1.0)


def logit_laplace_nll(x: torch.Tensor, mu: torch.Tensor, ln_b: torch.Tensor) -> torch.Tensor:
    """Mean negative log-density of mapped pixels `x` in (0, 1) per pixel channel.

    The paper's density: f(x | mu, b) = exp(-|logit(x) - mu| / b) / (2 b x (1 - x)), i.e. logit(x)
    is Laplace(mu, b) and 1/(x(1-x)) is the Jacobian of the logit. Its negative log is
    ln 2 + ln b + ln x + ln(1 - x) + |logit(x) - mu| / b, averaged over batch, channels and pixels.
    """
    x = x.float()
    log_x, log_1mx = torch.log(x), torch.log1p(-x)
    nll = LN2 + ln_b.float() + log_x + log_1mx + (log_x - log_1mx - mu.float()).abs() * torch.exp(-ln_b.float())
    return nll.mean()


def gaussian_nll(x: torch.Tensor, mu: torch.Tensor, sigma: float) -> torch.Tensor:
    """Mean negative log-density of mapped pixels `x` under N(sigmoid(mu), sigma^2) per pixel channel.

    The logit-Laplace lets the decoder choose each pixel's scale: on images of flat colour it grows
    confident on the many easy pixels of a plain area, where every error is then magnified, and leaves
    the few pixels of an edge to a wide scale, so the tiny dVAE rounded triangles into bells. A fixed
    scale weighs an error the same wherever it lies. The decoder's median is sigmoid(mu), as for the
    logit-Laplace, so decoding is the same under both.
    """
    err = torch.sigmoid(mu.float()) - x.float()
    return 0.5 * math.log(2 * math.pi * sigma ** 2) + (err ** 2).mean() / (2 * sigma ** 2)


def reconstruction_nll(x: torch.Tensor, stats: torch.Tensor, kind: str, sigma: float) -> torch.Tensor:
    """The configured likelihood (DVAEObjective.reconstruction) of mapped pixels `x` given the decoder's
    statistics (mu in channels 0-2, ln b in 3-5)."""
    if kind == "gaussian":
        return gaussian_nll(x, stats[:, :3], sigma)
    return logit_laplace_nll(x, stats[:, :3], stats[:, 3:])


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(q || uniform) in nats per grid cell, with q = softmax over the codebook axis (dim 1).

    KL(q || U_K) = sum_k q_k ln q_k + ln K; the mean is over batch and grid cells.
    """
    log_q = F.log_softmax(logits.float(), dim=1)
    return ((log_q.exp() * log_q).sum(dim=1) + math.log(logits.shape[1])).mean()


def usage_gap(logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """ln K - H(q_bar) in nats: how far the batch's mean code distribution q_bar is from using all K codes.

    q_bar averages softmax(logits / tau) over the batch and the grid cells. The per-cell KL above pulls
    each cell's distribution towards uniform but says nothing about which codes the cells pick, so a
    small dVAE can spread every cell over the same few codes and leave the rest dead; this term is zero
    only when the batch as a whole uses every code equally (wav2vec 2.0's codebook diversity loss, in
    nats). At the Gumbel temperature tau, q_bar follows the codes the decoder is actually fed: as tau
    falls it tends to the histogram of the argmax codes, the ones the Transformer will see.
    The batch is what the trainer hands the loss, one micro-batch on one rank: the gap of the update's q_bar
    would need every micro-batch's encoder output before the first backward (a second encoder pass, as CLIP's
    gradient cache runs), so the term depends on the micro-batch size (DVAEObjective.usage_weight).
    """
    q_bar = F.softmax(logits.float() / tau, dim=1).mean(dim=(0, 2, 3))
    return math.log(logits.shape[1]) + (q_bar * torch.log(q_bar.clamp_min(1e-12))).sum()


def cosine(step: int, start: float, end: float, steps: int) -> float:
    """Half a cosine from `start` (step 0) to `end` (step >= `steps`); `end` throughout when steps is 0."""
    if steps <= 0 or step >= steps:
        return end
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * max(step, 0) / steps))


def kl_weight(step: int, objective: DVAEObjective) -> float:
    """β at `step`: 0 -> kl_weight over kl_warmup_steps."""
    return cosine(step, 0.0, objective.kl_weight, objective.kl_warmup_steps)


def temperature(step: int, objective: DVAEObjective) -> float:
    """Gumbel-softmax τ at `step`: tau_start -> tau_end over tau_anneal_steps."""
    return cosine(step, objective.tau_start, objective.tau_end, objective.tau_anneal_steps)


def unfinished_schedules(objective: DVAEObjective, steps: int, where: str = "dvae.objective") -> str | None:
    """A run of `steps` updates that ends before τ's anneal or β's warm-up does, or None: their lengths are the
    objective's, not the run's (the learning rate's follows trainer.steps), so a run shortened with trainer.steps
    alone trains to its end at a temperature and a KL weight it never meant to stop at (`dvae=tiny trainer=tiny`
    ended at τ 0.979 of 0.0625)."""
    unfinished, keys = [], []
    if steps < objective.tau_anneal_steps and objective.tau_start != objective.tau_end:
        unfinished.append(f"the Gumbel temperature at {temperature(steps - 1, objective):.3g}, not {where}.tau_end="
                          f"{objective.tau_end:g} ({where}.tau_anneal_steps={objective.tau_anneal_steps})")
        keys.append(f"{where}.tau_anneal_steps")
    if steps < objective.kl_warmup_steps and objective.kl_weight > 0:
        unfinished.append(f"the KL weight at {kl_weight(steps - 1, objective):.3g}, not {where}.kl_weight="
                          f"{objective.kl_weight:g} ({where}.kl_warmup_steps={objective.kl_warmup_steps})")
        keys.append(f"{where}.kl_warmup_steps")
    if not unfinished:
        return None
    return (f"trainer.steps={steps} ends {' and '.join(unfinished)}; set {' and '.join(keys)} to at most {steps}, "
            "or raise trainer.steps")


def elbo_loss(images: torch.Tensor, logits: torch.Tensor, stats: torch.Tensor, beta: float,
              eps: float, usage_weight: float = 0.0, tau: float = 1.0,
              reconstruction: str = DVAEObjective.reconstruction,
              sigma: float = DVAEObjective.sigma) -> tuple[torch.Tensor, dict[str, float]]:
    """The negative ELB of one batch, in nats per pixel channel.

    Both terms are normalised by the same count (the image's pixel channels) so that β weighs
    them as in the ELB itself: loss = NLL_pixel + β * KL_image / (3 S^2), with KL_image summed
    over the image's grid cells. Metrics: the per-pixel-channel NLL, the KL per grid cell, and
    the mean squared error of the decoded median in [0, 1] (a scale everyone reads).
    `usage_weight` > 0 adds usage_weight * `usage_gap` (at temperature `tau`) per grid cell, on the
    same scale as the KL (not part of the ELB: a codebook-use regulariser for small dVAEs; the paper
    has none). `reconstruction` and `sigma` choose the pixels' likelihood (`reconstruction_nll`).
    """
    nll = reconstruction_nll(map_pixels(images.float(), eps), stats, reconstruction, sigma)
    kl = kl_to_uniform(logits)
    cells, pixel_channels = logits.shape[2] * logits.shape[3], images.shape[1] * images.shape[2] * images.shape[3]
    loss = nll + beta * kl * cells / pixel_channels
    metrics = {"nll": float(nll.detach()), "kl": float(kl.detach()), "beta": beta}
    if usage_weight > 0:
        gap = usage_gap(logits, tau)
        loss = loss + usage_weight * gap * cells / pixel_channels
        metrics["usage_gap"] = float(gap.detach())
    with torch.no_grad():
        metrics["mse"] = float(F.mse_loss(unmap_pixels(torch.sigmoid(stats[:, :3].float()), eps), images.float()))
    return loss, metrics


def histogram_perplexity(counts: torch.Tensor) -> float:
    """exp(entropy) of a histogram of codes: the number of equally used codes it is worth (1 = collapse)."""
    p = counts.double() / counts.sum().clamp_min(1)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def codebook_perplexity(codes: torch.Tensor, vocab_size: int) -> float:
    """`histogram_perplexity` of the codes' histogram."""
    return histogram_perplexity(torch.bincount(codes.reshape(-1), minlength=vocab_size))
