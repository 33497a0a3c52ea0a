"""Loading the chosen checkpoint (checkpoint_choice.py) on every rank: DeepSpeed's state, the generators, the EMA.

Every rank reads its own files, and any of them may fail on damage the completeness test could not see; the
ranks then stop together with one line that says which checkpoint to resume from instead, rather than leave
the others in the next collective.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from megadalle.train import distributed, rng, schedule
from megadalle.train.checkpoint import CheckpointError, one_line
from megadalle.train.checkpoint_damage import complete_tags


def load(engine, path: Path, rank: int, ema=None, universal: Path | None = None) -> dict:
    """Load DeepSpeed state, this rank's generators and EMA from `path`; return the client state.

    `universal`: the checkpoint's universal form (the data-parallel size changed; see universal.py).
    Then DeepSpeed's state comes from there, and a rank the saving run did not have keeps the
    generators it was seeded with (a warning says so): its dropout masks cannot be the old ones anyway.

    A failure on any rank stops every rank with the first one's error in one line, which names the
    checkpoint and the complete one before it: damage inside a file (checkpoint_damage.damage sees only its
    ends) that breaks a pickle or a zip record's header shows here, as torch's own error.

    Resume does not check the records' CRC-32, as export, generate and `load_run` do (zip_crc.py), so damage
    inside a tensor's bytes loads in silence here. What resume trains from is each rank's share of the fp32
    masters and optimizer states (at 12B, ~18 GB a rank at 8-way ZeRO-2): checking it is a second pass over every
    byte before the load (zlib's CRC-32 ran at ~1 GB/s on one core of the CI machine: ~20 s a rank, and a second
    read from shared storage where the page cache cannot hold a node's shares), on every resume, Slurm requeues
    included. The module states file alone would be cheaper but is no use here: under ZeRO 1-2 the fp32 masters
    overwrite its weights at resume, so its damage cannot reach the run, and export checks it.
    """
    client_state, error = {}, None
    try:
        client_state = _read(engine, path, rank, ema, universal)
    except CheckpointError as err:
        error = str(err)
    except Exception as err:  # whatever reading a damaged file raises: KeyError, UnpicklingError, RuntimeError...
        older = complete_tags(path.parent, before=path.name)
        error = (f"cannot load the checkpoint {universal or path} ({one_line(err)}); if it is damaged, "
                 + (f"resume from the complete one before it: resume={path.parent / older[-1]}" if older
                    else "start over in a new run_dir: no complete checkpoint precedes it"))
    error = distributed.first_error(error)
    if error is not None:
        raise CheckpointError(error)
    return client_state


def _read(engine, path: Path, rank: int, ema, universal: Path | None) -> dict:
    source = universal or path
    loaded, client_state = engine.load_checkpoint(str(source.parent), tag=source.name, load_module_strict=True,
                                                  load_optimizer_states=True, load_lr_scheduler_states=True)
    if loaded is None:
        raise CheckpointError(f"DeepSpeed could not load the checkpoint {source}")
    schedule.rejoin(engine.lr_scheduler)
    rng_file = path / rng.file_name(rank)
    if rng_file.is_file():
        rng.restore(torch.load(rng_file, weights_only=True))
    elif universal is not None:
        print(f"[checkpoint] warning: {rng_file} is missing (the run was saved by fewer ranks); rank {rank} keeps "
              "freshly seeded generators", file=sys.stderr, flush=True)
    else:
        raise CheckpointError(f"{rng_file} is missing: was the run saved with a different number of ranks?")
    if ema is not None:
        try:
            ema.load(path)
        except (FileNotFoundError, ValueError) as err:
            raise CheckpointError(f"cannot restore the EMA: {err}") from err
    return client_state
