"""The demo's check: its `output` is a folder it may write into, before anything is drawn, written or removed.

The demo removes and draws again `raw/` and `clip_images/` in its folder: given a user's folder, it deleted that
folder's own raw/ in silence. A folder it may take is therefore new, empty, or an earlier demo's, told by the record
every demo writes before anything else (`made/`, demo_done.py). A file there ended in a FileExistsError's traceback,
a file above it in a NotADirectoryError's. `run_demo` checks it too, so a call without the CLI gets the same check.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from megadalle.demo_done import MADE
from megadalle.preflight.probes import PreflightError, writable


def earlier_demo(path: Path) -> bool:
    """A demo's folder: its record, or what demos before the record left (their summary, or the dVAE's run, which
    the first training stage writes): `megadalle demo` reran such an `outputs/demo` and must go on doing so."""
    return (path / MADE).is_dir() or (path / "demo.json").is_file() or (path / "runs/dvae/run.json").is_file()


def check_output(output) -> None:
    """`output` can be made a folder, and holds nothing or an earlier demo."""
    writable("output", output, "folder")
    path = Path(str(output))
    if path.is_dir() and not earlier_demo(path) and any(path.iterdir()):
        raise PreflightError(f"output={output}: a folder that holds no earlier demo (no {MADE}/ record in it), "
                             "whose raw/ and clip_images/ the demo would replace; give a new or empty folder")


def check_demo(cfg: DictConfig) -> None:
    check_output(cfg.output)
