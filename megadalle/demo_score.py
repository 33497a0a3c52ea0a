"""The demo's accuracy figures: per caption, then mean and standard error over captions.

A caption's samples are not independent draws: the unit is the caption (megadalle.caption_unit). Each
caption gets its share of matching samples; a group's figure is their mean, with the standard error of that
mean over captions (sd / sqrt(n), None for a single caption). Two criteria: all of colour, shape and
position (the headline), and colour and shape alone (what the demo reported before it judged position).
Two picks: CLIP's best `keep` of the samples (what `generate` shows) and all samples (no rerank).
"""
from __future__ import annotations

from megadalle.caption_unit import mean_se
from megadalle.demo_data import Scene
from megadalle.demo_judge import ATTRIBUTES, agrees

CRITERIA = {"colour+shape+position": ATTRIBUTES, "colour+shape": ("colour", "shape")}
PICKS = ("reranked", "raw")


def caption_score(judged: list[Scene | None], scene: Scene, keep: int) -> dict[str, dict[str, float]]:
    """Share of a caption's samples (judged scenes, best first) that match it, per criterion and pick."""
    score = {}
    for criterion, attributes in CRITERIA.items():
        hits = [agrees(seen, scene, attributes) for seen in judged]
        score[criterion] = {"reranked": sum(hits[:keep]) / len(hits[:keep]), "raw": sum(hits) / len(hits)}
    return score


def summarise(scores: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float | None]]:
    """{criterion: {pick: mean, pick_se: standard error, 'captions': n}} over captions' `caption_score`s."""
    out: dict[str, dict[str, float | None]] = {}
    for criterion in CRITERIA:
        row: dict[str, float | None] = {"captions": len(scores)}
        for pick in PICKS:
            row[pick], row[f"{pick}_se"] = mean_se([s[criterion][pick] for s in scores])
        out[criterion] = row
    return out


def percent(mean: float, se: float | None) -> str:
    """'42% ± 7%' (or '42%' without a standard error)."""
    return f"{mean:.0%}" + ("" if se is None else f" ± {se:.0%}")
