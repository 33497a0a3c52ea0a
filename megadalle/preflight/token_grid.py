"""Token shards against the Transformer: their code grid and codebook, one check and one wording for the shards
`train` reads (data.shards, and data.val_shards when it validates)."""
from __future__ import annotations

from megadalle.preflight.probes import first_codes_side, fits


def fits_token_grid(named: str, shards, index, model, remedy: str | None = None) -> None:
    """The grid side and codebook size `encode` records in the index of `shards` (`named` in the message), or, for
    token shards written elsewhere, the grid of their first sample, against the model (TransformerConfig).
    `remedy` replaces the advice to set the model's key to the shards' value (the training shards decide it)."""
    meta = dict(index.meta)
    side = first_codes_side(shards) if "grid_size" not in meta else None
    if side is not None:  # token shards written elsewhere record no grid: their first sample shows it
        meta["grid_size"] = side
    if "grid_size" in meta:
        grid = int(meta["grid_size"])
        fits(grid == model.grid_size, f"model.grid_size={model.grid_size}: the token shards {named} hold {grid}x{grid} "
                                      f"code grids ({remedy or f'set model.grid_size={grid}'})")
    if "vocab_size" in meta:
        vocab = int(meta["vocab_size"])
        fits(vocab == model.image_vocab,  # larger: `generate` refuses the model with its dVAE
             f"model.image_vocab={model.image_vocab}: the token shards {named} hold codes of a {vocab}-entry "
             f"codebook, and sampling needs the model's codes to be its dVAE's "
             f"({remedy or f'set model.image_vocab={vocab}'})")
