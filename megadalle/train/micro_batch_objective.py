"""When a run's `trainer.micro_batch` is part of its objective, and what a rerun that changes it is told.

Elsewhere micro_batch changes nothing at the same global batch (a rerun may trade it against grad_accum:
rundir.RESUMABLE), but where a loss is computed per micro-batch it is the loss itself: run.json's comparison
(rundir.MATTERS_IN, rundir.check_config) and a new run directory resuming a checkpoint (universal.keep_objective)
refuse another one there.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

CONTRAST, USAGE = "contrast", "usage"
"""What makes `trainer.micro_batch` part of a run's objective (`micro_batch_objective`)."""


def micro_batch_objective(flat: dict) -> str | None:
    """What in the run of flattened config `flat` makes its micro_batch part of the objective: CONTRAST, a CLIP run
    whose losses contrast each micro-batch (`clip.negatives=micro_batch`: micro_batch x data-parallel ranks pairs);
    USAGE, a dVAE run with a codebook-use term (`dvae.objective.usage_weight` > 0: the entropy of each micro-batch's
    codes, lower for fewer images); None where micro_batch changes nothing at the same global batch."""
    if flat.get("clip.negatives") == "micro_batch":
        return CONTRAST
    if float(flat.get("dvae.objective.usage_weight") or 0) > 0:
        return USAGE
    return None


def micro_batch_refusal(path: Path, flat: dict, old: Any, new: Any) -> str:
    """Why a rerun of the run in `path`, of flattened config `flat` (run.json's), may not change trainer.micro_batch
    from `old` to `new` (rundir.MATTERS_IN)."""
    if micro_batch_objective(flat) == USAGE:
        return (f"{path} holds a dVAE run trained with dvae.objective.usage_weight="
                f"{flat['dvae.objective.usage_weight']}, whose codebook-use term is each micro-batch's: "
                f"trainer.micro_batch={new} (there {old}) would train another objective (the term of {new} images' "
                f"codes, not {old}'s); keep trainer.micro_batch={old} to resume it (trainer.grad_accum and the rank "
                f"count may change at the same global batch)")
    return (f"{path} holds a CLIP run trained with clip.negatives=micro_batch, where each loss contrasts "
            f"trainer.micro_batch x data-parallel ranks pairs: trainer.micro_batch={new} (there {old}) would contrast "
            f"{new} x ranks pairs instead of {old} x ranks, another objective whose loss and val/loss shift by "
            f"ln({old}/{new}); keep trainer.micro_batch={old} (and the rank count) to resume it, or train with "
            f"clip.negatives=update from the start (its contrast is the whole update's, whatever the layout)")
