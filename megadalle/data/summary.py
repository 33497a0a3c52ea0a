"""What a pass over input samples reports: kept, skipped by reason, and where the full report lies.

`prepare` and `index` both keep what they can, skip what they cannot and count it by reason (a bad
input never stops a run); one summary and one printed form serve both.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from megadalle.errors import UserError


@dataclass
class PassSummary:
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    """Skipped samples (inputs) per reason."""
    shards: int = 0
    seconds: float = 0.0
    report: str = ""
    bad: list[dict[str, str]] = field(default_factory=list)
    """One entry per skipped sample (input): where it was, reason, detail."""
    notes: dict[str, str] = field(default_factory=dict)
    """For a skip reason that a setting decides: the key, its value and what to set to keep such inputs."""
    warned: dict[str, int] = field(default_factory=dict)
    """Kept samples with a problem that does not stop them being trained on (unreadable metadata), per reason."""

    VERB: ClassVar[str] = ""
    UNIT: ClassVar[str] = "samples"
    """What the rate counts: kept plus skipped, per second."""

    def kept_note(self) -> str:
        """Said right after the kept count (e.g. how many of them went to validation)."""
        return ""

    def kept_lines(self) -> list[str]:
        """Lines about the kept samples, said after the skips (e.g. how many a crop cut down)."""
        return []

    def text(self) -> str:
        skipped = sum(self.skipped.values())
        rate = (self.kept + skipped) / max(self.seconds, 1e-9)
        lines = [f"{self.VERB}: kept {self.kept} samples{self.kept_note()} in {self.shards} shards, skipped {skipped} "
                 f"in {self.seconds:.1f}s ({rate:.1f} {self.UNIT}/s)"]
        lines += [f"  skipped {count:>6}  {reason}" + (f": {self.notes[reason]}" if reason in self.notes else "")
                  for reason, count in sorted(self.skipped.items())]
        lines += [f"  kept    {count:>6}  with {reason} (a metadata field that does not decode; see the report)"
                  for reason, count in sorted(self.warned.items())]
        lines += self.kept_lines()
        lines.append(f"  report: {self.report}")
        return "\n".join(lines)


def by_reason(counts: dict[str, int]) -> str:
    """Counts per reason as one line's words: `3 missing_field, 1 corrupt`."""
    return ", ".join(f"{count} {reason}" for reason, count in counts.items())


class NoUsableInput(UserError):
    """Every input was skipped: no shard, no index.json. A problem like any other (one line, exit code 2), where a
    summary on stdout and exit code 1 read as a run that had done something; the report stays, for its reasons."""

    def __init__(self, given: str, summary: PassSummary):
        skipped = by_reason(summary.skipped)
        if not skipped:
            super().__init__(f"{given}: no sample in it (its tars hold none); no index.json written")
            return
        super().__init__(f"{given}: no usable input, every one skipped ({skipped}); the summary above says why, "
                         f"{summary.report} lists each; no index.json written")
