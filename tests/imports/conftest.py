"""Shared by the import tests: a tiny Transformer run trained in this process, with dVAE, CLIP and tokenizer."""
from __future__ import annotations

import pytest
import torch

from megadalle import run_pieces
from megadalle.config.clip import ClipConfig
from megadalle.config.compose import compose
from megadalle.config.dvae import DVAEConfig
from megadalle.models.clip import CLIP
from megadalle.models.dvae import DVAE
from megadalle.weights import save_weights
from tests.distributed.dist_tokens import make_token_data
from tests.tiny_models import trained_with


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(run dir, tokenizer, dvae weights, clip weights): the tiny Transformer trained 2 steps in this process."""
    root = tmp_path_factory.mktemp("bundle")
    shards, tok = make_token_data(root)
    torch.manual_seed(0)
    dvae_cfg = DVAEConfig(image_size=16, n_hid=8, n_blk_per_group=1, n_groups=2, vocab_size=128, n_init=8)
    save_weights(root / "dvae.safetensors", DVAE(dvae_cfg).state_dict(), "dvae", dvae_cfg)
    clip_cfg = ClipConfig(text_len=16, text_vocab=512, text_width=16, text_layers=1, text_heads=2, image_size=16,
                          patch_size=8, vision_width=16, vision_layers=1, vision_heads=2, embed_dim=8)
    save_weights(root / "clip.safetensors", CLIP(clip_cfg).state_dict(), "clip", clip_cfg)
    trained_with(root / "clip.safetensors", tok)
    return train_tiny(root / "run", shards, tok), tok, root / "dvae.safetensors", root / "clip.safetensors"


@pytest.fixture(scope="session")
def trained_ema(trained):
    """The `trained` run's twin trained with an EMA (trainer.ema=0.5): after 2 updates its EMA and live weights
    differ. (run dir, tokenizer, dvae weights, clip weights), the files `trained`'s."""
    run, tok, dvae, clip = trained
    shards = run_pieces.read(run)["config"]["data"]["shards"]
    return train_tiny(run.parent / "run_ema", shards, tok, "trainer.ema=0.5"), tok, dvae, clip


def train_tiny(run_dir, shards, tok, *overrides: str):
    """`run_dir`: the tiny Transformer trained 2 steps in this process."""
    from megadalle.train.loop import train_from_config
    from megadalle.train.transformer import FACTORY, task_from_config

    cfg = compose("train", [f"data.shards={shards}", f"data.tokenizer={tok}", "data.num_workers=0", "model=tiny",
                            "trainer=tiny", "trainer.steps=2", "trainer.micro_batch=2", "logger=none",
                            "deepspeed=zero1", "resume=never", f"run_dir={run_dir}", *overrides])
    train_from_config(task_from_config(cfg), cfg, FACTORY)
    return run_dir
