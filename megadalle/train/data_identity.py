"""Training on the run's own data only: a resume on the checkpoint's data, every rank on rank 0's.

The data position is the update index (loop.py), so a resume replays the order exactly only on the data, seed
and global batch the checkpoint was trained with; and every rank opens the shard index itself, so ranks can read
different data sets when a folder changes while the run starts. Either way the run would train on in silence on
other data than it believes: both checks stop it with the reason instead. The fingerprint (names, counts, sizes) does
not tell one dVAE's codes from another's of the same shapes: token shards re-encoded in place by a retrained dVAE have
the fingerprint of the first codes, so the identity also holds what `encode` records of the codebook (CODES_KEYS).
"""
from __future__ import annotations

from megadalle.errors import UserError
from megadalle.train import distributed
from megadalle.train.checkpoint import CheckpointError

NEW_DATA_KEYS = ("fingerprint",)
"""The identity keys `new_data=true` lets differ: what the data is. Its order's seed, shuffling and the global
batch stay the run's (config keys a rerun may not change anyway)."""
CODES_KEYS = ("dvae", "grid_size", "vocab_size")
"""What token shards' index.json meta says their codes are (encode.py: the digest of the dVAE's weights, the code
grid's side, the codebook's size), taken into the identity where the shards record it. Each is compared only where
both the checkpoint and the shards have it: a run from before, or shards from elsewhere, resume as they did. Another
codebook is never `new_data`: the model learnt what these codes meant in the first."""


RECORDED_SINCE = ("shuffle_window",)
"""Identity keys checkpoints saved before them lack, compared only where both the checkpoint and the run have them,
as CODES_KEYS are: the data order depends on the shuffle window too, and a run resuming another's checkpoint with
another window went on in silence in another order."""


def codes_identity(meta: dict) -> dict:
    """The CODES_KEYS among a shard index's `meta` (none for image shards)."""
    return {key: meta[key] for key in CODES_KEYS if key in meta}


def check_data_identity(saved: dict | None, current: dict, checkpoint_path: str | None, new_data: bool = False,
                        rank: int = 0, prefix: str = "[train]") -> None:
    """Refuse to resume on data whose order differs from the checkpoint's (see Task.data_identity), unless the
    data alone differs and the run asked to go on with it (`new_data`): a folder img2dataset was still filling
    left no way to continue the run on it but starting again. Rank 0 says so then, under `prefix` (the running
    verb's)."""
    if not saved:
        return
    differs = [key for key in sorted(set(saved) | set(current), key=lambda key: (key not in CODES_KEYS, key))
               if saved.get(key) != current.get(key)
               and (key not in (*CODES_KEYS, *RECORDED_SINCE) or (key in saved and key in current))]
    if differs and differs[0] in CODES_KEYS:
        key = differs[0]
        raise CheckpointError(
            f"cannot resume {checkpoint_path}: it was trained on codes of another dVAE (its token shards' {key}="
            f"{saved[key]!r}, data.shards has {key}={current[key]!r}: encoded again since?); a model cannot go on "
            "with another codebook, new_data=true included: point data.shards at the shards the run trained on, or "
            "start a new run (another run_dir or name)")
    if new_data and differs and all(key in NEW_DATA_KEYS for key in differs):
        if rank == 0:
            print(f"{prefix} resuming {checkpoint_path} on other data (new_data=true): from here the run reads the "
                  "data as it is now, in a new order (some samples repeat, others come later)", flush=True)
        return
    for key in (key for key in differs if not (new_data and key in NEW_DATA_KEYS)):
        way_out = ("; to continue this run on the data as it is now (a folder that has grown), add new_data=true"
                   if key in NEW_DATA_KEYS else "")
        raise CheckpointError(
            f"cannot resume {checkpoint_path}: it was trained with data {key}={saved.get(key)!r}, this run has "
            f"{key}={current.get(key)!r}; an exact resume needs the same data, seed, shuffling and global batch{way_out}")


class DataDisagreement(UserError, RuntimeError):
    """Ranks of one run that read different data sets."""


def check_same_data(identity: dict) -> None:
    """Stop every rank when one reads other data than rank 0: each opens the shard index itself, and a folder that
    changes while the run starts (img2dataset still writing) is indexed again between two ranks' opens, so they
    would train on different data sets and orders, each believing its own."""
    reference = distributed.broadcast_object(identity)
    differs = sorted(key for key in set(reference) | set(identity) if reference.get(key) != identity.get(key))
    error = distributed.first_error(
        f"reads other data than rank 0 ({', '.join(differs)}: not the same): the shards changed while the run started; "
        "let them settle (or run megadalle index on them) and start again" if differs else None)
    if error:
        raise DataDisagreement(error)
