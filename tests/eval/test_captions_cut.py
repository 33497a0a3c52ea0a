"""Captions longer than text_len lose their last tokens without any error: every update counts them
(metric captions_cut, Transformer and CLIP) and the console says so once."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from megadalle.config.compose import compose
from megadalle.train.callbacks import RunInfo
from megadalle.train.console import Console
from megadalle.train.loop import train_from_config
from tests.dvae.conftest import write_image_shards

sys.path.insert(0, str(Path(__file__).parents[1] / "distributed"))
import dist_launch as launch  # noqa: E402
from dist_tokens import make_token_data  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cut")
    tokens, tok = make_token_data(root / "tokens", samples=16)
    write_image_shards(root / "images", 8, 32, 8)
    return tokens, tok, root / "images"


def run(name: str, text_len: int, data, run_dir: Path) -> list[dict]:
    tokens, tok, images = data
    # accumulating: CLIP's updates run through gradient caching (train/grad_cache.py), which counts them too
    common = ["trainer=tiny", "trainer.steps=2", "trainer.micro_batch=2", "trainer.grad_accum=2", "logger=none",
              f"run_dir={run_dir}", "data.num_workers=0"]
    if name == "transformer":
        from megadalle.train.transformer import FACTORY, task_from_config
        cfg = compose("train", [f"data.shards={tokens}", f"data.tokenizer={tok}", "model=tiny",
                                f"model.text_len={text_len}", *common])
    else:
        from megadalle.train.clip import FACTORY, task_from_config
        cfg = compose("train-clip", [f"data.shards={images}", f"tokenizer={tok}", "clip=tiny", "clip.text_vocab=40",
                                     f"clip.text_len={text_len}", "clip.image_size=32", *common])
    train_from_config(task_from_config(cfg), cfg, FACTORY)
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", ["transformer", "clip"])
def test_cut_captions_are_counted_and_said_once(name, data, tmp_path, capsys):
    """Every caption here is several tokens: text_len 2 cuts them all, 16 none."""
    cut = run(name, 2, data, tmp_path / "short")
    assert [r["captions_cut"] for r in cut] == [1.0, 1.0]
    assert capsys.readouterr().err.count("captions are longer than text_len") == 1
    whole = run(name, 16, data, tmp_path / "long")
    assert [r["captions_cut"] for r in whole] == [0.0, 0.0]
    assert "longer than text_len" not in capsys.readouterr().err


@pytest.mark.distributed
def test_a_pipeline_counts_cut_captions_too(data, tmp_path):
    """The pipeline's loss sees only inputs and labels: the count is taken as micro-batches pass (2 stages)."""
    tokens, tok, _ = data
    overrides = [f"data.shards={tokens}", f"data.tokenizer={tok}", "model=tiny", "model.text_len=2", "trainer=tiny",
                 "trainer.steps=2", "trainer.micro_batch=2", "trainer.grad_accum=2", "logger=none",
                 "data.num_workers=0", "deepspeed=pipe", f"run_dir={tmp_path / 'run'}"]
    launch.run(2, {"overrides": overrides, "probe": str(tmp_path / "probe.pt")}, tmp_path / "logs",
               script="dist_train_worker.py", timeout=600)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["captions_cut"] for r in records] == [1.0, 1.0]


def test_console_warns_at_the_first_nonzero_value_only(tmp_path, capsys):
    console = Console()
    console.start(RunInfo(tmp_path, rank=0, world_size=1, start_step=0, total_steps=3))
    for step, share in enumerate([0.0, 0.25, 0.5]):
        console.step(step, {"loss": 1.0, "captions_cut": share})
    console.end()
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "step 1: 25.0% of this update's captions" in err
