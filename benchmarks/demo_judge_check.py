"""The demo's pixel judge on pictures of two objects and of one, before and after it failed a second object.

    python benchmarks/demo_judge_check.py --demo outputs/demo [--pairs 400 --per-scene 8]

"old" is the dominant colour alone (judge(..., second_share=inf)), "new" the judge as the demo runs it.
False accepts: two scenes of different colour and position in one picture, judged as drawn, averaged into 2-
and 4-pixel cells, and through the demo's dVAE (decode(encode(image)), the argmax codes the Transformer trains
on); a picture passes when it is judged as its first scene, the caption's, the second shape being the intruder
(judged as either scene, 78-100% of them passed the old judge on 2026-12-06). False rejects: fresh single
scenes the same four ways, each showing one object, so the new judge should accept every one the old did.
With a trained Transformer in the folder, the demo's judged captions are drawn again as the demo draws them
(its settings and seed: the same samples) and scored under both judges. Prints tables and writes JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from arguments import at_least, default_out
from megadalle.config.demo import DemoConfig
from megadalle.demo_data import Scene, all_scenes, render, to_tensor
from megadalle.demo_judge import judge
from megadalle.demo_score import CRITERIA, caption_score, percent, summarise

JUDGES = {"old": math.inf, "new": inspect.signature(judge).parameters["second_share"].default}
"""second_share of each judge: inf never finds a second object, the new one is judge's default."""


def pairs(n: int, size: int, seed: int) -> tuple[torch.Tensor, list[Scene]]:
    """`n` pictures of two scenes of different colour and position (both shapes, the darker ink where they
    touch), and the first scene of each."""
    rng, scenes, images, captions = random.Random(seed), all_scenes(), [], []
    while len(captions) < n:
        a, b = rng.choice(scenes), rng.choice(scenes)
        if a.colour != b.colour and a.position != b.position:
            images.append(torch.minimum(to_tensor(render(a, size, rng)), to_tensor(render(b, size, rng))))
            captions.append(a)
    return torch.stack(images), captions


def singles(per_scene: int, size: int, seed: int) -> tuple[torch.Tensor, list[Scene]]:
    """`per_scene` fresh pictures of each of the 48 scenes, and their scenes."""
    rng, scenes = random.Random(seed), all_scenes() * per_scene
    return torch.stack([to_tensor(render(s, size, rng)) for s in scenes]), scenes


@torch.no_grad()
def views(images: torch.Tensor, dvae, batch: int = 64) -> dict[str, torch.Tensor]:
    """The pictures as drawn, in 2- and 4-pixel cells (a coarse decoder's steps), and through the dVAE."""
    out = {"drawn": images}
    for cell in (2, 4):
        out[f"{cell}-px cells"] = F.interpolate(F.avg_pool2d(images, cell), scale_factor=cell)
    if dvae is not None:
        out["dVAE"] = torch.cat([dvae.decode_codes(dvae.encode(images[i:i + batch])).clamp(0, 1)
                                 for i in range(0, len(images), batch)])
    return out


def passes(images: torch.Tensor, captions: list[Scene], share: float) -> list[bool]:
    return [judge(image, second_share=share) == scene for image, scene in zip(images, captions)]


def pictures_row(name: str, images: torch.Tensor, captions: list[Scene]) -> dict:
    old, new = (passes(images, captions, share) for share in JUDGES.values())
    return {"set": name, "pictures": len(captions), "old": sum(old), "new": sum(new),
            "old_only": sum(o > n for o, n in zip(old, new)), "new_only": sum(n > o for o, n in zip(old, new))}


def samples_rows(folder: Path) -> dict:
    """The demo's judged captions drawn again, scored under both judges; the samples in which the new judge finds
    a second object, and those only one judge passes."""
    from megadalle.demo import eval_scenes, generate_and_judge, load_demo_models
    from megadalle.sampling.loop import SamplingSettings

    demo = json.loads((folder / "demo.json").read_text())
    fields = {f.name for f in dataclasses.fields(DemoConfig)}
    d = DemoConfig(**{k: v for k, v in demo["config"].items() if k in fields})
    models, settings = load_demo_models(folder), SamplingSettings(d.temperature, d.top_k, d.top_p)
    scores = {name: {} for name in JUDGES}
    differ = {"samples": 0, "second_object": 0, "old_only": 0, "new_only": 0}
    for group, scene in eval_scenes(d, demo["seed"]):
        images, _ = generate_and_judge(*models, scene, d.samples, settings, demo["seed"])
        judged = {name: [judge(image, second_share=share) for image in images] for name, share in JUDGES.items()}
        for name in JUDGES:
            scores[name].setdefault(group, []).append(caption_score(judged[name], scene, d.keep))
        differ["samples"] += len(images)
        differ["second_object"] += sum(o is not None and n is None for o, n in zip(judged["old"], judged["new"]))
        differ["old_only"] += sum(o == scene != n for o, n in zip(judged["old"], judged["new"]))
        differ["new_only"] += sum(n == scene != o for o, n in zip(judged["old"], judged["new"]))
    accuracy = {name: {g: summarise(per) for g, per in by_group.items()} for name, by_group in scores.items()}
    return {"samples": d.samples, "keep": d.keep, "seed": demo["seed"], "accuracy": accuracy, "samples_judged": differ,
            "demo_json_headline": demo["headline"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", default=None, help="a demo output folder: its dVAE, and its Transformer if trained")
    ap.add_argument("--pairs", type=at_least(1), default=400, help="two-object pictures")
    ap.add_argument("--per-scene", type=at_least(1), default=8, help="single-object pictures per scene (48 scenes)")
    ap.add_argument("--size", type=at_least(8), default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=at_least(1), default=1)
    ap.add_argument("--out", default=default_out("demo_judge_check"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(args.demo) if args.demo else None
    dvae = None
    if folder is not None:
        from megadalle.models.dvae import load_dvae
        dvae = load_dvae(folder / "dvae.safetensors")
    rows = []
    drawn = {"two objects": pairs(args.pairs, args.size, args.seed),
             "one object": singles(args.per_scene, args.size, args.seed + 1)}
    for kind, (images, captions) in drawn.items():
        rows += [pictures_row(f"{kind}, {view}", batch, captions) for view, batch in views(images, dvae).items()]
    print("| pictures | n | old judge passes | new judge passes | old only | new only |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['pictures']} | {r['old']} ({r['old'] / r['pictures']:.0%}) | "
              f"{r['new']} ({r['new'] / r['pictures']:.0%}) | {r['old_only']} | {r['new_only']} |")
    report = {"demo": args.demo, "seed": args.seed, "size": args.size,
              "second_share": {name: str(share) for name, share in JUDGES.items()}, "pictures": rows,
              "load": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if folder is not None and (folder / "model.safetensors").exists():
        report["demo_samples"] = samples = samples_rows(folder)
        print(f"\n{samples['samples_judged']}")
        picks = f"CLIP's best {samples['keep']} / all {samples['samples']}"
        print(f"\n| group, criterion | old judge: {picks} | new judge: {picks} |")
        print("|---|---|---|")
        for group in samples["accuracy"]["old"]:
            for criterion in CRITERIA:
                cells = [samples["accuracy"][name][group][criterion] for name in JUDGES]
                print(f"| {group}, {criterion} | " + " | ".join(
                    f"{percent(c['reranked'], c['reranked_se'])} / {c['raw']:.0%}" for c in cells) + " |")
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
