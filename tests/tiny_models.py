"""Tiny random models that `generate` and `evaluate` can read, written in seconds: a Transformer on a 4 x 4 grid of
16 codes (text_vocab 64), its dVAE and CLIP, and a tokenizer of 40 pieces.

A helper, not a test module, so that the many tests that sample from such a folder share one definition and no
test module becomes another's library.
"""
import io
import json
from pathlib import Path

import sentencepiece as spm

from megadalle.config import build
from megadalle.config.clip import ClipConfig
from megadalle.config.dvae import DVAEConfig
from megadalle.config.model import TransformerConfig
from megadalle.models.clip import CLIP
from megadalle.models.dvae import DVAE
from megadalle.models.transformer import Transformer
from megadalle.weights import save_weights


def tokenizer_model(path, captions=("a red circle at the top left", "a blue square at the bottom right") * 20):
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(captions), model_writer=buf, model_type="bpe",
                                   vocab_size=40, pad_id=0, unk_id=1, bos_id=2, eos_id=3, hard_vocab_limit=False,
                                   minloglevel=2)
    path.write_bytes(buf.getvalue())


def dvae_config(**changes) -> DVAEConfig:
    """The tiny models' dVAE (16 px images as a 4 x 4 grid of 16 codes), with `changes` for one that is not."""
    base = {"image_size": 16, "n_hid": 8, "n_blk_per_group": 1, "n_groups": 3, "vocab_size": 16, "n_init": 8}
    return build(DVAEConfig, {**base, **changes}, "dvae")


def save_dvae(path: Path, cfg: DVAEConfig) -> Path:
    return save_weights(path, DVAE(cfg).state_dict(), "dvae", cfg)


def write_tiny_models(folder):
    """Random Transformer, dVAE and CLIP weights with a tokenizer, named as `generate` finds them in `folder`."""
    model_cfg = TransformerConfig(text_len=8, text_vocab=64, grid_size=4, image_vocab=16, n_layers=2, n_heads=2,
                                  head_dim=8, d_model=16, conv_kernel=3,
                                  attention_pattern=["row", "column"])
    dvae_cfg = dvae_config()
    clip_cfg = ClipConfig(text_len=8, text_vocab=64, text_width=16, text_layers=1, text_heads=2, image_size=16,
                          patch_size=8, vision_width=16, vision_layers=1, vision_heads=2, embed_dim=8)
    for name, module, kind, cfg in (("model", Transformer(model_cfg), "transformer", model_cfg),
                                    ("dvae", DVAE(dvae_cfg), "dvae", dvae_cfg), ("clip", CLIP(clip_cfg), "clip", clip_cfg)):
        save_weights(folder / f"{name}.safetensors", module.state_dict(), kind, cfg)
    tokenizer_model(folder / "tokenizer.model")
    trained_with(folder / "clip.safetensors", folder / "tokenizer.model")


def trained_with(clip, tokenizer):
    """Record `tokenizer` as the one the CLIP weights `clip` trained with, in their config JSON, as train-clip's
    export writes it (sampling/clip_record.py)."""
    from megadalle.data.digest import sha256
    from megadalle.sampling.clip_record import TOKENIZER
    from megadalle.weights import config_path

    meta = config_path(clip)
    config = json.loads(meta.read_text())
    config[TOKENIZER] = {"sha256": sha256(tokenizer), "path": str(tokenizer)}
    meta.write_text(json.dumps(config))
