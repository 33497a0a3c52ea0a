"""A warning on stderr, on a line of its own: the one way megadalle's verbs warn and go on.

Written through tqdm: evaluate samples its captions under a progress bar, and a plain print went on after the bar,
on its line. A check that can both warn and refuse collects its warnings and hands them back, to be said once every
check has passed (`say_all`): a warning followed by a refusal left two lines for one run that did not start.
"""
from __future__ import annotations

import sys

from tqdm import tqdm

WARNING = "[megadalle] warning:"
"""What begins a warning that no verb's own prefix (`[generate]`) begins."""


def warn(message: str, prefix: str = WARNING) -> None:
    tqdm.write(f"{prefix} {message}", file=sys.stderr)


def say_all(messages: list[str], prefix: str = WARNING) -> None:
    """The warnings a check collected, once it and those after it have all passed."""
    for message in messages:
        warn(message, prefix)
