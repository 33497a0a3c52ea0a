"""`train`'s other codes against data.shards': the validation split's and the sample grids' dVAE.

`encode` records in index.json's meta the digest of the dVAE whose codes the shards hold (`dvae`). A validation split
of another dVAE's codes, of the same grid and codebook, passed every check and scored the model on a codebook it never
saw (its val/loss meaningless); a `dvae_weights` of the same shapes decoded every grid with another codebook's images.
Both are held here against data.shards' digest, where the shards record one (shards from elsewhere do not). The grids'
dVAE is loaded for its digest: the one check here that reads more than a config, a dVAE's weights (tens of MB).
"""
from __future__ import annotations

from omegaconf import DictConfig

from megadalle.preflight.probes import fits


def check_codes_dvae(cfg: DictConfig, index, val) -> None:
    """The validation split `val` ((folder, index) when the run validates: validation.validation_split) and
    `dvae_weights` (when given) of the dVAE that encoded data.shards, whose ShardIndex is `index`."""
    encoded_by = index.meta.get("dvae")
    if encoded_by is None:
        return
    shards = cfg.data.shards
    if val is not None:
        folder, val_index = val
        other = val_index.meta.get("dvae")
        fits(other in (None, encoded_by),
             f"data.val_shards={folder}: codes of another dVAE than data.shards={shards} (index.json meta dvae "
             f"{other}, {encoded_by} there): validation would score the model on a codebook it does not learn; give "
             "data.val_shards encoded by the dVAE of data.shards")
    weights = cfg.get("dvae_weights")
    if weights:
        from megadalle.encode import dvae_digest

        digest = dvae_digest(weights)
        fits(digest == encoded_by,
             f"dvae_weights={weights}: not the dVAE data.shards={shards} were encoded with (its weights' digest "
             f"{digest}, index.json meta dvae {encoded_by}): the grids would decode the codes with another codebook; "
             "give the dVAE that encoded them")

