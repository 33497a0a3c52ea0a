"""`megadalle demo`: the whole pipeline, end to end, on a data set it draws itself, on a CPU.

Every stage runs through the same function its verb runs (compose the verb's config, call the
stage), so the demo exercises exactly what users run: prepare -> tokenizer -> train-dvae ->
encode -> train-clip -> train -> export -> generate with CLIP rerank. At the end it draws the
held-out captions (scenes never shown in training) and a few training captions, writes their
grids, and judges the samples with a pixel check that no model took part in (demo_judge.py).
The headline accuracy is that of the training captions (does the pipeline learn colour and
shape?); held-out scenes, which need composition, are reported beside it.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from megadalle.config import build, top_level
from megadalle.config.compose import compose
from megadalle.config.demo import DemoConfig
from megadalle.demo_data import Scene, split_scenes, write_dataset
from megadalle.demo_judge import chance, matches


class Timer:
    """Wall-clock seconds per stage, printed as each ends and kept for the summary."""

    def __init__(self):
        self.times: dict[str, float] = {}

    def __call__(self, name: str, began: float) -> None:
        self.times[name] = time.perf_counter() - began
        print(f"[demo] {name}: {self.times[name]:.0f} s", flush=True)


def trainer_overrides(steps: int, batch: int, lr: float) -> list[str]:
    """The shared trainer settings of the demo's three training stages (CPU, no wandb, one checkpoint)."""
    return ["trainer=tiny", f"trainer.steps={steps}", f"trainer.micro_batch={batch}", f"trainer.lr={lr}",
            f"trainer.min_lr={lr / 10}", f"trainer.warmup_steps={max(1, steps // 20)}", "trainer.ema=null",
            f"trainer.log_every={max(1, steps // 5)}", "trainer.checkpoint_every=0", "trainer.keep_checkpoints=1",
            "logger=none", "deepspeed=zero1", "resume=never", "data.num_workers=1"]


def make_data(d: DemoConfig, out: Path, seed: int) -> tuple[Path, Path, list[Scene], list[Scene]]:
    """Draw the images, shard them (prepare) and train the BPE tokenizer; returns shards, tokenizer, scenes."""
    from megadalle.config.data import PrepareConfig, TokenizerConfig
    from megadalle.data.prepare import prepare
    from megadalle.data.tokenizer import train_tokenizer

    train, held = split_scenes(d.holdout, seed)
    write_dataset(out / "raw", train, d.per_scene, d.image_size, seed)
    cfg = compose("prepare", [f"input={out / 'raw'}", f"output={out / 'shards'}", f"image_size={d.image_size}",
                              "format=png", f"min_side={d.image_size}"])
    print(prepare(build(PrepareConfig, top_level(cfg, PrepareConfig), "")).text())
    cfg = compose("tokenizer", [f"input={out / 'shards'}", f"output={out / 'tokenizer.model'}",
                                f"vocab_size={d.vocab_size}"])
    tc = build(TokenizerConfig, top_level(cfg, TokenizerConfig), "")
    train_tokenizer(tc.input, tc.output, tc.vocab_size, tc.normalization, tc.character_coverage, tc.max_sentences,
                    tc.byte_fallback, tc.seed)
    return out / "shards", out / "tokenizer.model", train, held


def train_models(d: DemoConfig, out: Path, shards: Path, tokenizer: Path, vocab: int, timer: Timer) -> None:
    """dVAE, encode, CLIP and Transformer; writes dvae/clip/model.safetensors beside tokenizer.model in `out`."""
    from megadalle.encode import encode_shards
    from megadalle.export import export
    from megadalle.models.dvae import load_dvae
    from megadalle.train.clip import train_clip
    from megadalle.train.dvae import train_dvae
    from megadalle.train.loop import train_from_config
    from megadalle.train.transformer import FACTORY, task_from_config

    began = time.perf_counter()
    train_dvae(compose("train-dvae", ["dvae=tiny", f"dvae.image_size={d.image_size}", f"dvae.n_groups={d.dvae_groups}",
                                      f"dvae.objective.tau_anneal_steps={d.dvae_steps}", f"data.shards={shards}",
                                      f"weights={out / 'dvae.safetensors'}", f"run_dir={out / 'runs/dvae'}",
                                      *trainer_overrides(d.dvae_steps, d.dvae_batch, d.dvae_lr)]))
    timer("train-dvae", began)
    began = time.perf_counter()
    dvae = load_dvae(out / "dvae.safetensors")
    encode_shards(dvae, shards, out / "tokens", batch_size=128)
    timer("encode", began)
    began = time.perf_counter()
    train_clip(compose("train-clip", ["clip=tiny", f"clip.image_size={d.image_size}", f"clip.text_vocab={vocab}",
                                      f"clip.text_len={d.text_len}", f"data.shards={shards}", f"tokenizer={tokenizer}",
                                      f"weights={out / 'clip.safetensors'}", f"run_dir={out / 'runs/clip'}",
                                      *trainer_overrides(d.clip_steps, d.clip_batch, d.clip_lr)]))
    timer("train-clip", began)
    began = time.perf_counter()
    cfg = compose("train", ["model=tiny", f"model.text_len={d.text_len}", f"model.text_vocab={vocab}",
                            f"model.grid_size={dvae.cfg.grid_size}", f"model.image_vocab={dvae.cfg.vocab_size}",
                            f"data.shards={out / 'tokens'}", f"data.tokenizer={tokenizer}", "data.bpe_dropout=0.0",
                            f"run_dir={out / 'runs/dalle'}",
                            *trainer_overrides(d.steps, d.batch, d.lr)])
    result = train_from_config(task_from_config(cfg), cfg, FACTORY)
    export(result.run_dir, out / "model.safetensors", dtype="fp32")
    timer("train", began)


def evaluate(d: DemoConfig, out: Path, scenes: list[tuple[str, Scene]], seed: int) -> dict[str, dict[str, float]]:
    """Generate each caption, write its grid, judge the pixels; accuracy per group (held-out / seen)."""
    from megadalle.data.tokenizer import Tokenizer
    from megadalle.sample import generate
    from megadalle.sampling.grid import save_grid
    from megadalle.sampling.load import load_model
    from megadalle.sampling.loop import SamplingSettings

    model, dvae, clip = (load_model(out / f"{name}.safetensors", kind) for name, kind in
                         (("model", "transformer"), ("dvae", "dvae"), ("clip", "clip")))
    tokenizer = Tokenizer(out / "tokenizer.model")
    settings = SamplingSettings(d.temperature, d.top_k)
    hits: dict[str, dict[str, list[bool]]] = {}
    for group, scene in scenes:
        result = generate(model, dvae, clip, tokenizer, scene.caption, d.samples, d.samples, d.samples, settings,
                          seed, progress=False)
        save_grid(result.images[:d.keep], out / "grids" / group / f"{scene.caption.replace(' ', '_')}.png")
        judged = [matches(image, scene) for image in result.images]
        per = hits.setdefault(group, {"reranked": [], "raw": []})
        per["reranked"] += judged[:d.keep]
        per["raw"] += judged
        print(f"[demo] {group:8s} {scene.caption!r}: {sum(judged[:d.keep])}/{d.keep} of CLIP's best, "
              f"{sum(judged)}/{len(judged)} of all samples match")
    return {g: {k: sum(v) / len(v) for k, v in per.items()} for g, per in hits.items()}


def run_demo(d: DemoConfig, output: str | Path, seed: int = 0) -> dict:
    """The whole demo; returns the accuracies, chance and stage times (also written to <output>/demo.json)."""
    if d.threads:
        torch.set_num_threads(d.threads)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    timer, start = Timer(), time.perf_counter()
    began = time.perf_counter()
    shards, tokenizer, train, held = make_data(d, out, seed)
    timer("data + prepare + tokenizer", began)
    from megadalle.data.tokenizer import Tokenizer

    train_models(d, out, shards, tokenizer, Tokenizer(tokenizer).vocab_size, timer)
    began = time.perf_counter()
    seen = random.Random(seed).sample(train, min(d.seen, len(train)))
    scenes = [("heldout", s) for s in held] + [("seen", s) for s in seen]
    accuracy = evaluate(d, out, scenes, seed)
    timer("generate + judge", began)
    main = accuracy.get("seen", accuracy.get("heldout"))["reranked"]
    summary = {"accuracy": accuracy, "chance": chance(), "seconds": timer.times, "total_seconds":
               time.perf_counter() - start}
    (out / "demo.json").write_text(json.dumps(summary, indent=1))
    for group, acc in accuracy.items():
        print(f"[demo] {group}: {acc['reranked']:.0%} of CLIP's best {d.keep}, {acc['raw']:.0%} of all "
              f"{d.samples} samples (chance {chance():.0%})")
    print(f"[demo] grids in {out / 'grids'}; total {summary['total_seconds'] / 60:.1f} min")
    print("[demo] caption accuracy = captions seen in training, CLIP's best; held-out scenes (a colour, shape "
          "and position combination never shown) are the harder test above")
    print(f"caption accuracy: {main:.0%} (chance {chance():.0%})", flush=True)
    return summary


def run(cfg: DictConfig) -> int:
    d = build(DemoConfig, cfg.demo, "demo")
    run_demo(d, cfg.output, int(cfg.get("seed", 0)))
    return 0
