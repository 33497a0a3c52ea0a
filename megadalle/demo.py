"""`megadalle demo`: the whole pipeline, end to end, on a data set it draws itself, on a CPU.

Every stage runs through the same function its verb runs (compose the verb's config, call the
stage), so the demo exercises exactly what users run: prepare -> tokenizer -> train-dvae ->
encode -> train-clip (on the dVAE's reconstructions, what it will rerank) -> train -> export ->
generate with CLIP rerank. At the end it draws the
held-out captions (colour, shape and position combinations never shown in training, the
generalisation DALL-E is about) and a few training captions, writes their grids, and judges the
samples with a pixel check that no model took part in (demo_judge.py). The headline is the
held-out captions judged on all three attributes, with its standard error over captions
(demo_score.py); seen captions and the colour + shape figure are printed beside it, and so is the
dVAE's own check (demo_recon.py), which bounds what the Transformer can draw.

Rerunning the same command continues: a data stage an earlier run finished is kept (demo_done.py), and each
training stage resumes from its checkpoints (a finished one only exports its weights again). Ctrl-C, TERM or
USR1 stop it in any stage with exit status 75 and a line saying what it kept (demo_stop.py). A rerun whose settings
differ from those the earlier demo's trained stages were trained with is refused before it writes anything
(demo_settings.py).
"""
from __future__ import annotations

import dataclasses
import io
import random
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from omegaconf import DictConfig

from megadalle.config import build, top_level
from megadalle.config.demo import DemoConfig, DemoRunConfig
from megadalle.data import atomic
from megadalle.demo_checks import check_captions_fit, check_settings
from megadalle.demo_data import Scene, split_scenes, write_dataset
from megadalle.demo_done import once
from megadalle.demo_judge import chance, judge
from megadalle.demo_score import CRITERIA, caption_score, percent, summarise
from megadalle.demo_settings import DATA, check_and_record, value
from megadalle.demo_stop import DemoStopped, finished, interruptible, stop_line
from megadalle.demo_verbs import clip_config, prepare_folder, train_demo_dvae, train_demo_tokenizer, transformer_config
from megadalle.errors import UserError
from megadalle.interrupted import named
from megadalle.preflight.demo import check_output


class Timer:
    """Wall-clock seconds per finished stage, printed as each ends and kept for the summary, and the stage running
    now (with its run directory, for a training stage): what a stop's line reports (demo_stop.stop_line)."""

    def __init__(self):
        self.times: dict[str, float] = {}
        self.current: str | None = None
        self.run_dir: Path | None = None

    @contextmanager
    def stage(self, name: str, run_dir: Path | None = None) -> Iterator[None]:
        self.current, self.run_dir, began = name, run_dir, time.perf_counter()
        yield
        self.times[name] = time.perf_counter() - began
        self.current = self.run_dir = None
        print(f"[demo] {name}: {self.times[name]:.0f} s", flush=True)


def make_data(d: DemoConfig, out: Path, seed: int) -> tuple[Path, Path]:
    """Draw the training scenes' images, shard them (prepare) and train the BPE tokenizer, unless an earlier run
    made them with the same sizes and seed (demo_done.once); returns both paths."""
    shards, tokenizer = out / "shards", out / "tokenizer.model"
    once(out, "data", data_inputs(d, seed), [shards / "index.json", tokenizer], lambda: draw_data(d, out, seed))
    check_captions_fit(tokenizer, d.text_len)  # the stage's own tokenizer, as run_demo's up-front check foresaw it
    return shards, tokenizer


def data_inputs(d: DemoConfig, seed: int) -> dict:
    """What the demo's data (images, shards, tokenizer) is made from."""
    return {name: value(d, seed, name) for name in DATA}


def draw_data(d: DemoConfig, out: Path, seed: int) -> None:
    """`make_data`'s work: images and captions in a fresh `raw/` (an earlier run's larger data set must not stay
    in it, prepare reads every file), their shards and the tokenizer."""
    train, _ = split_scenes(d.holdout, seed)
    shutil.rmtree(out / "raw", ignore_errors=True)
    write_dataset(out / "raw", train, d.per_scene, d.image_size, seed)
    prepare_folder(out / "raw", out / "shards", d.image_size)
    train_demo_tokenizer(d, out / "shards", out / "tokenizer.model", seed)


def clip_training_shards(d: DemoConfig, dvae, out: Path, shards: Path, seed: int) -> Path:
    """Shards of what CLIP trains on (`d.clip_images`): the training images' own `shards`, or shards of the
    dVAE's reconstructions of them under `out/clip_images/reconstructed`, with a copy of the originals
    beside them for `both` (prepare reads the folder recursively); kept from an earlier run of the same data and
    dVAE weights (demo_done.once)."""
    from megadalle.demo_recon import reconstruct_folder
    from megadalle.encode import weights_digest

    if d.clip_images == "original":
        return shards
    folder = out / "clip_images"

    def make() -> None:
        shutil.rmtree(folder, ignore_errors=True)
        reconstruct_folder(dvae, out / "raw", folder / "reconstructed")
        if d.clip_images == "both":
            shutil.copytree(out / "raw", folder / "original")
        prepare_folder(folder, out / "shards_clip", d.image_size)

    once(out, "clip_images", {"clip_images": d.clip_images, "dvae": weights_digest(dvae), "data": data_inputs(d, seed)},
         [out / "shards_clip" / "index.json"], make)
    return out / "shards_clip"


def train_models(d: DemoConfig, out: Path, shards: Path, tokenizer: Path, vocab: int, timer: Timer, seed: int) -> None:
    """dVAE, encode, CLIP (on what `d.clip_images` says) and Transformer, each stage under the demo's root seed as
    `megadalle <verb> seed=S` would run it; writes dvae/clip/model.safetensors beside tokenizer.model in `out`."""
    from megadalle.encode import encode_shards
    from megadalle.export import export
    from megadalle.models.dvae import load_dvae
    from megadalle.train.clip import train_clip
    from megadalle.train.loop import train_from_config
    from megadalle.train.transformer import FACTORY, task_from_config

    with timer.stage("train-dvae", out / "runs/dvae"):
        finished("train-dvae", train_demo_dvae(d, out, shards, seed) is not None)
    with timer.stage("encode"):
        dvae = load_dvae(out / "dvae.safetensors")
        encode_shards(dvae, shards, out / "tokens", batch_size=128, weights=out / "dvae.safetensors")
    with timer.stage("train-clip", out / "runs/clip"):
        clip_shards = clip_training_shards(d, dvae, out, shards, seed)
        clip = train_clip(clip_config(d, out, clip_shards, tokenizer, vocab, seed))
        finished("train-clip", clip is not None)
    with timer.stage("train", out / "runs/dalle"):
        cfg = transformer_config(d, out, tokenizer, vocab, dvae.cfg.grid_size, dvae.cfg.vocab_size, seed)
        result = train_from_config(task_from_config(cfg), cfg, FACTORY)
        finished("train", not result.stopped_by_signal)
        export(result.run_dir, out / "model.safetensors", dtype="fp32")


def generate_and_judge(model, dvae, clip, tokenizer, scene: Scene, samples: int, settings, seed: int):
    """`samples` images of the scene's caption, best first by CLIP (sample order without `clip`), and their
    judged scenes."""
    from megadalle.sample import generate

    result = generate(model, dvae, clip, tokenizer, scene.caption, samples, samples, samples, settings, seed,
                      progress=False)
    return result.images, [judge(image) for image in result.images]


def load_demo_models(out: Path):
    """(Transformer, dVAE, CLIP, tokenizer) of a demo output folder."""
    from megadalle.data.tokenizer import Tokenizer
    from megadalle.sampling.load import load_model

    model, dvae, clip = (load_model(out / f"{name}.safetensors", kind) for name, kind in
                         (("model", "transformer"), ("dvae", "dvae"), ("clip", "clip")))
    return model, dvae, clip, Tokenizer(out / "tokenizer.model")


def eval_scenes(d: DemoConfig, seed: int) -> list[tuple[str, Scene]]:
    """The captions the demo judges: every held-out scene, then `d.seen` training scenes, as (group, scene)."""
    train, held = split_scenes(d.holdout, seed)
    seen = random.Random(seed).sample(train, min(d.seen, len(train)))
    return [("heldout", s) for s in held] + [("seen", s) for s in seen]


def evaluate(d: DemoConfig, out: Path, scenes: list[tuple[str, Scene]], seed: int) -> dict[str, dict]:
    """Generate each caption, write its grid, judge the pixels; accuracy per group (held-out / seen) and criterion."""
    from megadalle.sampling.loop import SamplingSettings

    model, dvae, clip, tokenizer = load_demo_models(out)
    settings = SamplingSettings(d.temperature, d.top_k, d.top_p)
    scores: dict[str, list] = {}
    for group, scene in scenes:
        images, judged = generate_and_judge(model, dvae, clip, tokenizer, scene, d.samples, settings, seed)
        save_grid(images[:d.keep], out / "grids" / group / f"{scene.caption.replace(' ', '_')}.png")
        score = caption_score(judged, scene, d.keep)
        scores.setdefault(group, []).append(score)
        full = score["colour+shape+position"]
        print(f"[demo] {group:8s} {scene.caption!r}: {full['reranked'] * d.keep:.0f}/{d.keep} of CLIP's best, "
              f"{full['raw'] * d.samples:.0f}/{d.samples} of all samples match (colour, shape, position)")
    return {group: summarise(per) for group, per in scores.items()}


def save_grid(images: torch.Tensor, path: Path) -> None:
    """The grid of `images` as a PNG at `path`, written atomically: a stop while it is written leaves the old
    grid or none."""
    from megadalle.sampling.grid import make_grid

    png = io.BytesIO()
    make_grid(images).save(png, format="PNG")
    atomic.write_bytes(path, png.getvalue())


def report(d: DemoConfig, summary: dict) -> str:
    """The closing lines: every group and criterion, then the headline (held-out captions, all attributes)."""
    lines = []
    for group, per in summary["accuracy"].items():
        for criterion, acc in per.items():
            lines.append(f"[demo] {group} ({acc['captions']} captions), {criterion}: "
                         f"{percent(acc['reranked'], acc['reranked_se'])} of CLIP's best {d.keep}, "
                         f"{percent(acc['raw'], acc['raw_se'])} of all {d.samples} samples "
                         f"(chance {summary['chance'][criterion]:.0%})")
    recon = summary["dvae"]
    lines.append(f"[demo] dVAE: {recon['reconstructions_kept']:.1%} of reconstructions keep colour, shape and "
                 f"position; {recon['codes_in_use']:.0%} of codes in use, perplexity {recon['perplexity']:.0f}")
    headline = summary["headline"]
    lines.append(f"[demo] grids in {summary['grids']}; total {summary['total_seconds'] / 60:.1f} min")
    lines.append(f"[demo] caption accuracy = {headline['group']} captions judged on colour, shape and position, "
                 f"CLIP's best {d.keep} of {d.samples}: {percent(headline['accuracy'], headline['se'])} "
                 "(± standard error over captions)")
    chance_all = summary["chance"]["colour+shape+position"]
    lines.append(f"caption accuracy: {headline['accuracy']:.0%} (chance {chance_all:.0%})")
    return "\n".join(lines)


def run_demo(d: DemoConfig, output: str | Path, seed: int = 0, timer: Timer | None = None) -> dict:
    """The whole demo; returns the accuracies, chance, the dVAE check and stage times (also in <output>/demo.json).
    `timer` times its stages and knows which one runs (`run` reports it when a signal stops the demo)."""
    from megadalle.data.tokenizer import Tokenizer
    from megadalle.demo_recon import check_dvae
    from megadalle.models.dvae import load_dvae

    if d.threads:
        torch.set_num_threads(d.threads)
    out = Path(output)
    check_output(out)
    check_settings(d, out, seed)
    out.mkdir(parents=True, exist_ok=True)
    check_and_record(d, out, seed)
    timer, start = timer or Timer(), time.perf_counter()
    with timer.stage("data + prepare + tokenizer"):
        shards, tokenizer = make_data(d, out, seed)
    train_models(d, out, shards, tokenizer, Tokenizer(tokenizer).vocab_size, timer, seed)
    with timer.stage("dvae check"):
        dvae_check = check_dvae(load_dvae(out / "dvae.safetensors"), d.image_size, d.check_per_scene, seed + 1)
    with timer.stage("generate + judge"):
        accuracy = evaluate(d, out, eval_scenes(d, seed), seed)
    group = "heldout" if "heldout" in accuracy else "seen"
    main = accuracy[group]["colour+shape+position"]
    summary = {"headline": {"group": group, "accuracy": main["reranked"], "se": main["reranked_se"]},
               "accuracy": accuracy, "chance": {c: chance(a) for c, a in CRITERIA.items()}, "dvae": dvae_check,
               "seconds": timer.times, "total_seconds": time.perf_counter() - start, "grids": str(out / "grids"),
               "config": dataclasses.asdict(d), "seed": seed}
    atomic.write_json(out / "demo.json", summary)
    print(report(d, summary), flush=True)
    return summary


def not_continued(stage: str, run_dir: Path, err: Exception) -> UserError:
    """A training stage that cannot resume the run an earlier demo left (other data or settings), in the demo's
    terms: the trainer's own way out (`new_data=true`, `name=`, `run_dir=`) is no key of the demo."""
    reason = str(err).split("; ")[0]
    return UserError(f"{stage} cannot continue the run an earlier demo left in {run_dir} ({reason}); rerun with that "
                     "demo's settings, or give this one another output=")


def run(cfg: DictConfig) -> int:
    """`megadalle demo`: 0 once it has run to its end, STOPPED_EXIT (75) with one line when a stop signal ended it
    (demo_stop.py)."""
    from megadalle.train.checkpoint import CheckpointError
    from megadalle.train.rundir import RunDirError
    from megadalle.train.signals import STOPPED_EXIT

    d = build(DemoConfig, cfg.demo, "demo")
    r = build(DemoRunConfig, top_level(cfg, DemoRunConfig), "")
    timer = Timer()
    try:
        with interruptible():
            run_demo(d, r.output, r.seed, timer)
        return 0
    except DemoStopped as stopped:  # the trainer checkpointed (or, stopped in its start-up, kept its last one)
        line = stop_line(stopped.stage, stopped.how, list(timer.times), timer.run_dir)
    except KeyboardInterrupt as interrupted:  # an Interrupted, or a second Ctrl-C in a training stage (no save)
        line = stop_line(timer.current, named(interrupted), list(timer.times), timer.run_dir)
    except (CheckpointError, RunDirError) as err:
        if timer.run_dir is None:
            raise
        raise not_continued(timer.current, timer.run_dir, err) from err
    print(line, file=sys.stderr, flush=True)
    return STOPPED_EXIT


if __name__ == "__main__":  # `python -m megadalle.demo ARGS` is `megadalle demo ARGS`
    from megadalle.cli import run_verb

    run_verb("demo")
