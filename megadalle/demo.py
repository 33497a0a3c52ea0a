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
import math
import random
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Iterator

import torch
from omegaconf import DictConfig

from megadalle.config import ConfigError, build, top_level
from megadalle.config.compose import compose
from megadalle.config.demo import DemoConfig, DemoRunConfig, check_multiple
from megadalle.data import atomic
from megadalle.demo_data import Scene, all_scenes, split_scenes, write_dataset
from megadalle.demo_done import once
from megadalle.demo_judge import chance, judge
from megadalle.demo_score import CRITERIA, caption_score, percent, summarise
from megadalle.demo_settings import DATA, check_and_record, value
from megadalle.demo_stop import DemoStopped, finished, interruptible, named, stop_line
from megadalle.errors import UserError
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


def path_override(key: str, path: Path | str) -> str:
    """`key="path"` as hydra reads it back to the very path: bare, a comma in the demo's output folder was read as a
    sweep, and an `=`, a bracket, an apostrophe or a space as syntax, after the demo had drawn its data. Inside the
    quotes, a quote and the backslashes before one (or at the end) are escaped, and `${` (no interpolation here)."""
    text = re.sub(r'(\\+)(?="|$)', r"\1\1", str(path)).replace('"', '\\"').replace("${", "\\${")
    return f'{key}="{text}"'


def trainer_overrides(group: str, steps: int, batch: int, lr: float) -> list[str]:
    """The shared trainer settings of the demo's three training stages (CPU, no wandb, one checkpoint, no validation
    split), over the stage's `trainer` group: `dvae` and `clip` keep their verbs' optimisers, `tiny` the Transformer's.

    resume=auto: a rerun of the demo continues each stage from its checkpoint (a stopped one where it stopped, a
    finished one only exports again); resume=never refused every rerun, the stage's last step being saved. A log
    line every 1/20 of the updates: at 1/5, the dVAE's stage printed nothing for minutes on a loaded machine.

    ZeRO stage 0: the demo is one process, where ZeRO-1's partitions shard nothing and its gradient buckets
    and master copies only cost time (benchmarks/RESULTS.md, "Trainer vs a plain PyTorch loop"). fp32 on any
    machine: on a GPU `precision=auto` means bf16, which stage 0 refuses with fp32 accumulation, so the demo
    stopped at its first training stage wherever CUDA was present (and fp32 keeps a seed's demo the same)."""
    return [f"trainer={group}", "trainer.precision=fp32", f"trainer.steps={steps}", f"trainer.micro_batch={batch}",
            f"trainer.lr={lr}", f"trainer.min_lr={lr / 10}", f"trainer.warmup_steps={max(1, steps // 20)}",
            "trainer.ema=null", f"trainer.log_every={max(1, steps // 20)}", "trainer.checkpoint_every=0",
            "trainer.keep_checkpoints=1", "trainer.eval_every=0",
            "logger=none", "deepspeed=zero1", "deepspeed.zero_stage=0", "resume=auto", "data.num_workers=1"]


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


def train_demo_tokenizer(d: DemoConfig, shards: Path, output: Path, seed: int):
    """`megadalle tokenizer` of `shards` at the demo's vocabulary size, written to `output`; returns the Tokenizer."""
    from megadalle.config.data import TokenizerConfig
    from megadalle.data.tokenizer import train_tokenizer

    cfg = compose("tokenizer", [path_override("input", shards), path_override("output", output),
                                f"vocab_size={d.vocab_size}", f"seed={seed}"])
    tc = build(TokenizerConfig, top_level(cfg, TokenizerConfig), "")
    return train_tokenizer(tc.input, tc.output, tc.vocab_size, tc.normalization, tc.character_coverage,
                           tc.max_sentences, tc.byte_fallback, tc.seed)


def prepare_folder(raw: Path, shards: Path, image_size: int) -> Path:
    """`megadalle prepare` of a folder of PNGs and captions into shards at the demo's image size."""
    from megadalle.config.data import PrepareConfig
    from megadalle.data.prepare import prepare

    cfg = compose("prepare", [path_override("input", raw), path_override("output", shards), f"image_size={image_size}",
                              "format=png", f"min_side={image_size}"])
    print(prepare(build(PrepareConfig, top_level(cfg, PrepareConfig), "")).text())
    return shards


def caption_shards(d: DemoConfig, folder: Path, seed: int) -> Path:
    """Shards of one caption of each training scene (no image) in `folder`, what `up_front_tokenizer` trains on."""
    from megadalle.data.shards import ShardWriter

    train, _ = split_scenes(d.holdout, seed)
    with ShardWriter(folder) as writer:
        for i, scene in enumerate(train):
            writer.write({"__key__": f"{i:06d}", "txt": scene.caption})
    return folder


def up_front_tokenizer(d: DemoConfig, seed: int):
    """The data stage's tokenizer, before the data is drawn: trained on one caption of each training scene, it is the
    same piece for piece (every scene has `per_scene` images, so every caption's count is scaled alike, and BPE
    merges the most frequent pair, which scaling does not change)."""
    with tempfile.TemporaryDirectory() as folder, redirect_stderr(io.StringIO()):  # its progress bar
        return train_demo_tokenizer(d, caption_shards(d, Path(folder) / "shards", seed),
                                    Path(folder) / "tokenizer.model", seed)


def check_captions_fit(tokenizer: Path | bytes, text_len: int) -> None:
    """Refuse a text_len that would cut the end off a caption: the last words name the position, and a cut one
    makes two scenes' captions the same for the Transformer and CLIP. run_demo asks before any stage runs, of
    `up_front_tokenizer` (asked only of the data stage's, it was a traceback once that stage had run), and
    make_data asks again of the stage's own, should the two ever differ."""
    from megadalle.data.tokenizer import Tokenizer

    tok = Tokenizer(tokenizer)
    need, longest = max((len(tok.encode(scene.caption)), scene.caption) for scene in all_scenes())
    if need > text_len:
        raise ConfigError(f"demo.text_len={text_len} cuts captions: {longest!r} is {need} tokens under the demo's "
                          f"tokenizer; set demo.text_len={need} or more")


DEMO_CLIP = "clip=tiny"
"""The demo's CLIP, whose patch size the image size must fit (check_image_size)."""


def check_image_size(d: DemoConfig) -> None:
    """Refuse an image_size CLIP cannot cut into whole patches before any stage runs: DemoConfig checks it against
    the dVAE only, and it was refused at the train-clip stage, after the data, the dVAE and encode, naming
    clip.image_size, a key the demo sets itself."""
    patch = compose("train-clip", [DEMO_CLIP]).clip.patch_size
    down = 2 ** (d.dvae_groups - 1)
    check_multiple("demo.image_size", d.image_size, math.lcm(down, patch),
                   f"whole {DEMO_CLIP} patches of {patch} px and the dVAE's downsampling 2**(dvae_groups-1) = {down}")


def demo_dvae_config(d: DemoConfig, out: Path, shards: Path, seed: int = 0) -> DictConfig:
    """The demo's train-dvae config: dvae=tiny under the demo's seed, then `d.dvae_overrides`."""
    return compose("train-dvae", [f"seed={seed}",
        "dvae=tiny", f"dvae.image_size={d.image_size}", f"dvae.n_groups={d.dvae_groups}",
        f"dvae.objective.tau_anneal_steps={d.dvae_steps}",
        f"dvae.objective.kl_warmup_steps={max(1, d.dvae_steps // 15)}", path_override("data.shards", shards),
        path_override("weights", out / "dvae.safetensors"), path_override("run_dir", out / "runs/dvae"),
        *trainer_overrides("dvae", d.dvae_steps, d.dvae_batch, d.dvae_lr), *d.dvae_overrides])


def check_dvae_overrides(d: DemoConfig, out: Path, seed: int = 0) -> None:
    """Refuse a bad `d.dvae_overrides` (an unknown key, a value of the wrong type or range) before the demo
    makes its data, not minutes later when its dVAE stage starts."""
    from megadalle.train.dvae import task_from_config

    if d.dvae_overrides:
        task_from_config(demo_dvae_config(d, out, out / "shards", seed))


def train_demo_dvae(d: DemoConfig, out: Path, shards: Path, seed: int = 0) -> Path:
    """The demo's dVAE stage, trained from `demo_dvae_config`."""
    from megadalle.train.dvae import train_dvae

    return train_dvae(demo_dvae_config(d, out, shards, seed))


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
        clip = train_clip(compose("train-clip", [f"seed={seed}", DEMO_CLIP, f"clip.image_size={d.image_size}",
                                          f"clip.text_vocab={vocab}", f"clip.text_len={d.text_len}",
                                          path_override("data.shards", clip_shards),
                                          path_override("tokenizer", tokenizer),
                                          path_override("weights", out / "clip.safetensors"),
                                          path_override("run_dir", out / "runs/clip"),
                                          *trainer_overrides("clip", d.clip_steps, d.clip_batch, d.clip_lr)]))
        finished("train-clip", clip is not None)
    with timer.stage("train", out / "runs/dalle"):
        cfg = compose("train", [f"seed={seed}", "model=tiny", f"model.text_len={d.text_len}",
                                f"model.text_vocab={vocab}", f"model.grid_size={dvae.cfg.grid_size}",
                                f"model.image_vocab={dvae.cfg.vocab_size}",
                                path_override("data.shards", out / "tokens"),
                                path_override("data.tokenizer", tokenizer), "data.bpe_dropout=0.0",
                                path_override("run_dir", out / "runs/dalle"),
                                *trainer_overrides("tiny", d.steps, d.batch, d.lr)])
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
    check_dvae_overrides(d, out, seed)
    check_image_size(d)
    check_captions_fit(up_front_tokenizer(d, seed).proto, d.text_len)
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
