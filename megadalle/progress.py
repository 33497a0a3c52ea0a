"""Progress bars that suit where they are written: on a terminal tqdm's bar, redrawn in place; in a file or a pipe (a
Slurm job's output file, `> log 2>&1`, `| tee`) one plain line every LOG_SECONDS.

tqdm redraws its bar with a carriage return ten times a second. In a log that is one "line" of thousands of
redraws (a 104 s `generate` wrote 366 of them, 27 KB without a newline; an hours-long `encode` megabytes), which
`tail` shows nothing of until the work ends and `grep` and `less` choke on. Every verb's bar is a `progress_bar`, so
every verb's log reads the same: the count, rate and ETA on a line of its own now and then, and the last one at the
end. The training verbs' bar is off in a log (train/console.py), where their step lines say as much.
"""
from __future__ import annotations

import sys
from typing import IO, Any

from tqdm import tqdm

LOG_SECONDS = 30.0
"""How often a bar written to a file or pipe prints its line."""


class Lines:
    """A file for tqdm that writes each redraw as a line of its own: tqdm's carriage returns and the spaces that
    blank a longer earlier redraw dropped, the blank writes that clear the bar (`tqdm.write`) and a redraw the same
    as the line before ignored."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line and line != self.last:  # a bar closing redraws its last state
            self.stream.write(line + "\n")
            self.last = line

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """`tqdm(iterable, **kwargs)` on stderr (or `file=`), in plain lines every LOG_SECONDS where that is no terminal."""
    stream = kwargs.pop("file", None) or sys.stderr
    if not kwargs.get("disable") and not _is_terminal(stream):
        kwargs.update(file=Lines(stream), mininterval=LOG_SECONDS, maxinterval=LOG_SECONDS, dynamic_ncols=False)
    else:
        kwargs["file"] = stream
    return tqdm(iterable, **kwargs)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a stream without one, or closed
        return False
