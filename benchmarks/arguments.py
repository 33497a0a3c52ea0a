"""What the benchmarks' command lines share: argument types, and where a run's JSON goes by default.

A run without --out writes a new file named for the benchmark and the UTC time, beside the scripts, and never
a committed one: RESULTS.md cites the committed JSON as the evidence of its figures, and a rerun with the
defaults used to overwrite it (three sections lost theirs that way). To keep a run as evidence, commit its file.
"""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent


def default_out(name: str) -> str:
    """benchmarks/<name>-<UTC time>.json, as an absolute path (the same from any working directory)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return str(BENCHMARKS / f"{name}-{stamp}.json")


def at_least(low: int):
    """An argparse type: an integer >= `low` (0 steps or repeats divided by zero, a micro-batch of 0 failed in
    DeepSpeed), refused by argparse in one line that names the value."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value
    return parse


def positive_float(text: str) -> float:
    """An argparse type: a float above 0 (`--peak-tflops 0` divided by zero after the whole run)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def model_name(text: str) -> str:
    """An argparse type: a conf/model/<name>.yaml that exists (another name was a traceback from hydra)."""
    names = sorted(p.stem for p in (BENCHMARKS.parent / "conf" / "model").glob("*.yaml") if p.stem != "schema")
    if text not in names:
        raise argparse.ArgumentTypeError(f"{text!r} is none of conf/model's: {', '.join(names)}")
    return text


def comma_list(choices):
    """An argparse type: comma-separated names, each one of `choices` (an unknown one failed in every row of the
    run, after the GPU had started)."""
    def parse(text: str) -> str:
        unknown = [name for name in text.split(",") if name not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"{', '.join(map(repr, unknown))}: expected among {', '.join(choices)}")
        return text
    return parse
