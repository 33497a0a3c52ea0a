"""A short train-clip run on real shards: 32 captioned 16 px scenes prepared here and a tokenizer of 40 pieces.

A helper, not a test module: train-clip's own tests, its resume, its tokenizer record and its export train the
same run, and none of those test modules should be another's library.
"""
from megadalle.config import build, top_level
from megadalle.config.compose import compose
from megadalle.config.data import PrepareConfig
from megadalle.data.prepare import prepare
from megadalle.data.tokenizer import train_tokenizer
from megadalle.demo_data import all_scenes, write_dataset


def clip_config(tmp_path, *overrides: str, val_fraction: float = 0.0):
    """A train-clip config over 32 captioned 16 px scenes (prepared here) and a tokenizer of 40 pieces."""
    return compose("train-clip", clip_overrides(tmp_path, *overrides, val_fraction=val_fraction))


def clip_overrides(tmp_path, *overrides: str, val_fraction: float = 0.0) -> list[str]:
    """clip_config's overrides, its data prepared."""
    write_dataset(tmp_path / "raw", all_scenes()[:8], per_scene=4, size=16, seed=0)
    pc = compose("prepare", [f"input={tmp_path / 'raw'}", f"output={tmp_path / 'shards'}", "image_size=16",
                             "format=png", "min_side=8", "num_workers=0", f"val_fraction={val_fraction}"])
    prepare(build(PrepareConfig, top_level(pc, PrepareConfig), ""), progress=False)
    train_tokenizer(tmp_path / "shards", tmp_path / "tok.model", vocab_size=40)
    return ["clip=tiny", "clip.text_vocab=40", "clip.text_len=10", "clip.image_size=16",
            f"data.shards={tmp_path / 'shards'}", "data.num_workers=0", f"tokenizer={tmp_path / 'tok.model'}",
            "trainer.steps=12", "trainer.micro_batch=16", "trainer.lr=3e-3", "trainer.warmup_steps=2",
            "trainer.log_every=4", "logger=none", f"run_dir={tmp_path / 'run'}", *overrides]
