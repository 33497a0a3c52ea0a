"""The demo's settings refused before any stage runs, naming the `demo.*` key to change and a value that works: each
was refused only by a later stage, after the data, the dVAE or CLIP had been made, as a traceback or naming a key
the demo sets itself. `run_demo` asks `check_settings` first; the data stage asks `check_captions_fit` again.
"""
from __future__ import annotations

import io
import math
import tempfile
from contextlib import redirect_stderr
from pathlib import Path

from megadalle.config import ConfigError
from megadalle.config.compose import compose
from megadalle.config.demo import DemoConfig, check_multiple
from megadalle.demo_data import all_scenes, split_scenes
from megadalle.demo_verbs import DEMO_CLIP, demo_dvae_config, train_demo_tokenizer


def check_settings(d: DemoConfig, out: Path, seed: int) -> None:
    """Every up-front check of the demo's settings, the cheap ones first (the last trains a tokenizer)."""
    check_dvae_overrides(d, out, seed)
    check_image_size(d)
    check_captions_fit(up_front_tokenizer(d, seed).proto, d.text_len)


def check_dvae_overrides(d: DemoConfig, out: Path, seed: int = 0) -> None:
    """Refuse a bad `d.dvae_overrides` (an unknown key, a value of the wrong type or range) before the demo
    makes its data, not minutes later when its dVAE stage starts."""
    from megadalle.train.dvae import task_from_config

    if d.dvae_overrides:
        task_from_config(demo_dvae_config(d, out, out / "shards", seed))


def check_image_size(d: DemoConfig) -> None:
    """Refuse an image_size CLIP cannot cut into whole patches before any stage runs: DemoConfig checks it against
    the dVAE only, and it was refused at the train-clip stage, after the data, the dVAE and encode, naming
    clip.image_size, a key the demo sets itself."""
    patch = compose("train-clip", [DEMO_CLIP]).clip.patch_size
    down = 2 ** (d.dvae_groups - 1)
    check_multiple("demo.image_size", d.image_size, math.lcm(down, patch),
                   f"whole {DEMO_CLIP} patches of {patch} px and the dVAE's downsampling 2**(dvae_groups-1) = {down}")


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
