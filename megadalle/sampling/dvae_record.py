"""The dVAE whose codes a Transformer learnt, as its records say: what export and the sampling verbs compare the dVAE
in use with.

A Transformer learns what one dVAE's codes mean. Another dVAE of the same grid and codebook (OpenAI's beside one's
own, one retrained) passes every config check and decodes the samples as another codebook's pictures: export and
generate went on with exit code 0. `encode` records the digest of its dVAE's weights in the token shards' index.json
meta (`dvae`), a Transformer run's run.json copies it (`rundir.digests`, key RUN_KEY) and `export` copies that into
bundle.json (BUNDLE_KEY), so the dVAE given to export, or to a sampling verb reading the run or the folder, is compared
with it as `train` compares its grids' dVAE (preflight/codes_dvae.py). A dVAE's JSON records no digest of its own:
the digest is taken of the weights its reader has loaded anyway (export's check of the file it copies, the sampling
verbs' decoder), so that the dVAE compared is the one that decodes, read once: a train-dvae run read with ema=false
decodes with its live weights, not the export (its EMA) that encoded the codes. It is read before the Transformer
(the paper's dVAE is ~98M parameters, ~390 MB in fp32; its Transformer 12B). Nothing recorded (a run from before
the record, shards encoded elsewhere): nothing compared.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from megadalle.sampling.compatible import IncompatibleModels
from megadalle.train.rundir import CODES_DVAE

RUN_KEY = CODES_DVAE
"""The key of run.json's `sha256` holding the digest, written by `rundir.digests`."""
BUNDLE_KEY = "codes_dvae"
"""The key of bundle.json holding the digest, copied from the run's run.json by `export`."""


@dataclass(frozen=True)
class CodesRecord:
    """What a record says of the dVAE whose codes a Transformer learnt."""

    digest: str
    """encode.weights_digest of that dVAE, as its token shards' index.json meta recorded it."""
    record: str
    """The record: `RUN/run.json` or `FOLDER/bundle.json`."""


def check(dvae: Path, recorded: CodesRecord | None, model: nn.Module, read_as: str = "") -> None:
    """Refuse the dVAE `model`, loaded from `dvae` (weights, or a train-dvae run read as `read_as` says:
    `ema=false`), when its weights' digest is not the `recorded` one (None: nothing records one, nothing is
    compared)."""
    from megadalle.encode import weights_digest

    if recorded is None:
        return
    digest = weights_digest(model)
    if digest != recorded.digest:
        read = f" read with {read_as}" if read_as else ""
        raise IncompatibleModels(f"dvae_weights={dvae}{read}: not the dVAE whose codes the Transformer learnt (its "
                                 f"weights' digest {digest}; {recorded.record} records {recorded.digest}, the dVAE "
                                 "that encoded its token shards): it would decode the samples as another codebook's "
                                 "pictures; give the dVAE that encoded them (dvae_weights=FILE)")
