"""Small builders shared by the unit tests."""
import dataclasses

import torch

from megadalle.config import build
from megadalle.config.compose import compose
from megadalle.config.model import TransformerConfig


def tiny_config(**overrides) -> TransformerConfig:
    cfg = build(TransformerConfig, compose("plan", ["model=tiny"]).model, "model")
    return dataclasses.replace(cfg, **overrides)


def random_batch(cfg: TransformerConfig, batch: int = 2, caption_len: int | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(1, cfg.text_vocab, (batch, cfg.text_len), generator=g)
    text[:, caption_len or cfg.text_len - 3:] = cfg.text_pad_id
    image = torch.randint(0, cfg.image_vocab, (batch, cfg.grid_len), generator=g)
    return text, image


def help_lines(capsys, argv) -> list[str]:
    """The lines `megadalle ARGV` (a `--help`) prints."""
    from megadalle.cli import main

    assert main(argv) == 0
    return capsys.readouterr().out.splitlines()


def line_of(lines, start):
    """The first of `lines` that starts with `start` once indented."""
    return next(line for line in lines if line.strip().startswith(start))
