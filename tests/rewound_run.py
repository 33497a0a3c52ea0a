"""A finished run's folder copied as if it had been killed right after one of its checkpoints: what resume tests
compare with the uninterrupted run, without killing a process at the right moment."""
from __future__ import annotations

import shutil
from pathlib import Path


def rewound_copy(run: Path, copy: Path, step: int) -> Path:
    """`run` copied to `copy` as it stood after its step-`step` checkpoint: run.json names the copy (a run folder
    refuses another's record), the later checkpoints are gone, `latest` names step `step` and metrics.jsonl is
    empty (so that it holds only what the resumed run logs)."""
    shutil.copytree(run, copy)
    (copy / "run.json").write_text((copy / "run.json").read_text().replace(str(run), str(copy)))
    for later in (copy / "checkpoints").glob("step_*"):
        if int(later.name.removeprefix("step_")) > step:
            shutil.rmtree(later)
    (copy / "checkpoints" / "latest").write_text(f"step_{step:08d}\n")
    (copy / "metrics.jsonl").write_text("")
    return copy
