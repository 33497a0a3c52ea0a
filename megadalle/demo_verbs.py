"""The demo's settings as each verb's own config: every stage composes its verb's config (`megadalle <verb> KEY=VALUE`
overrides, hydra's defaults under them) and calls the function the verb runs, so the demo runs what users run.
The demo's paths go in quoted (path_override): its output folder is the user's to name.
"""
from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig

from megadalle.config import build, top_level
from megadalle.config.compose import compose
from megadalle.config.demo import DemoConfig


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


DEMO_CLIP = "clip=tiny"
"""The demo's CLIP, whose patch size the image size must fit (check_image_size)."""


def demo_dvae_config(d: DemoConfig, out: Path, shards: Path, seed: int = 0) -> DictConfig:
    """The demo's train-dvae config: dvae=tiny under the demo's seed, then `d.dvae_overrides`."""
    return compose("train-dvae", [f"seed={seed}",
        "dvae=tiny", f"dvae.image_size={d.image_size}", f"dvae.n_groups={d.dvae_groups}",
        f"dvae.objective.tau_anneal_steps={d.dvae_steps}",
        f"dvae.objective.kl_warmup_steps={max(1, d.dvae_steps // 15)}", path_override("data.shards", shards),
        path_override("weights", out / "dvae.safetensors"), path_override("run_dir", out / "runs/dvae"),
        *trainer_overrides("dvae", d.dvae_steps, d.dvae_batch, d.dvae_lr), *d.dvae_overrides])


def train_demo_dvae(d: DemoConfig, out: Path, shards: Path, seed: int = 0) -> Path:
    """The demo's dVAE stage, trained from `demo_dvae_config`."""
    from megadalle.train.dvae import train_dvae

    return train_dvae(demo_dvae_config(d, out, shards, seed))


def clip_config(d: DemoConfig, out: Path, shards: Path, tokenizer: Path, vocab: int, seed: int) -> DictConfig:
    """The demo's train-clip config: DEMO_CLIP at the demo's image size and caption length, on `shards`."""
    return compose("train-clip", [f"seed={seed}", DEMO_CLIP, f"clip.image_size={d.image_size}",
                                  f"clip.text_vocab={vocab}", f"clip.text_len={d.text_len}",
                                  path_override("data.shards", shards), path_override("tokenizer", tokenizer),
                                  path_override("weights", out / "clip.safetensors"),
                                  path_override("run_dir", out / "runs/clip"),
                                  *trainer_overrides("clip", d.clip_steps, d.clip_batch, d.clip_lr)])


def transformer_config(d: DemoConfig, out: Path, tokenizer: Path, vocab: int, grid_size: int, image_vocab: int,
                       seed: int) -> DictConfig:
    """The demo's train config: model=tiny at the dVAE's grid and codebook, on the codes encode wrote to out/tokens,
    without BPE dropout (the demo's captions are few and fixed)."""
    return compose("train", [f"seed={seed}", "model=tiny", f"model.text_len={d.text_len}",
                             f"model.text_vocab={vocab}", f"model.grid_size={grid_size}",
                             f"model.image_vocab={image_vocab}", path_override("data.shards", out / "tokens"),
                             path_override("data.tokenizer", tokenizer), "data.bpe_dropout=0.0",
                             path_override("run_dir", out / "runs/dalle"),
                             *trainer_overrides("tiny", d.steps, d.batch, d.lr)])
