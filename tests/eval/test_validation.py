"""Validation during training: every task logs val/... at every `trainer.eval_every` updates, equal to a plain
evaluation of the same weights on the same held-out batches (the EMA's, when the run keeps one)."""
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from megadalle.config.compose import compose
from megadalle.train.consolidate import load_run
from megadalle.train.loop import train_from_config
from megadalle.train.step_totals import with_step_totals
from megadalle.train.task import VALIDATION_SEED, DataPart
from megadalle.train.validate import seeded
from tests.dvae.conftest import write_image_shards

sys.path.insert(0, str(Path(__file__).parents[1] / "distributed"))
from dist_tokens import make_token_data  # noqa: E402

STEPS, EVERY, EVAL_BATCHES, MICRO = 4, 2, 2, 4  # the last evaluation sees the final weights


def records(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def plain_validation(task, model, step: int, count: int = EVAL_BATCHES) -> dict[str, float]:
    """The mean validation metrics of `model` over the first `count` batches, without the trainer. The batches
    carry the whole subset's loss counts (the Transformer's text loss is the token mean of all of them); the task's
    summary of the subset replaces its means (the dVAE's perplexity)."""
    batches = with_step_totals(task, list(itertools.islice(task.validation_batches(DataPart(MICRO, 1, 0, 1)),
                                                           count)), 1, torch.device("cpu"))
    totals: dict[str, float] = {}
    model.eval()
    with torch.no_grad(), seeded(VALIDATION_SEED, torch.device("cpu")):
        for batch in batches:
            for name, value in task.validation_loss(model, batch, step).items():
                totals[name] = totals.get(name, 0.0) + value / count
    return {**totals, **task.validation_summary(torch.device("cpu"))}


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_image_shards(root / "shards", 24, 32, 16, seed=0)
    write_image_shards(root / "shards" / "val", 12, 32, 16, seed=1)  # the held-out split, found by default
    return root / "shards"


@pytest.fixture(scope="module")
def token_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokens")
    shards, tok = make_token_data(root / "train")
    val, _ = make_token_data(root / "val", samples=16)
    return shards, tok, val


def common(run_dir: Path) -> list[str]:
    """Seed 3: validation draws its subset and its noise with VALIDATION_SEED, whatever the run's."""
    return ["seed=3", "trainer=tiny", f"trainer.steps={STEPS}", f"trainer.micro_batch={MICRO}", f"trainer.eval_every={EVERY}",
            f"trainer.eval_batches={EVAL_BATCHES}", "trainer.log_every=100", "logger=none", f"run_dir={run_dir}",
            "data.num_workers=0"]


def configs(name: str, image_data, token_data, run_dir: Path):
    shards, tok, val = token_data
    if name == "transformer":
        from megadalle.train.transformer import FACTORY, task_from_config
        overrides = [f"data.shards={shards}", f"data.tokenizer={tok}", f"data.val_shards={val}", "model=tiny",
                     "model.dropout=0.2"]
        return "train", overrides, task_from_config, FACTORY
    if name == "dvae":
        from megadalle.train.dvae import FACTORY, task_from_config
        return "train-dvae", [f"data.shards={image_data}", "dvae=tiny", "dvae.n_hid=16", "dvae.vocab_size=64"], \
            task_from_config, FACTORY
    from megadalle.train.clip import FACTORY, task_from_config
    return "train-clip", [f"data.shards={image_data}", f"tokenizer={tok}", "clip=tiny", "clip.text_vocab=40",
                          "clip.text_len=10", "clip.image_size=32"], task_from_config, FACTORY


@pytest.mark.parametrize("name", ["transformer", "dvae", "clip"])
def test_val_loss_is_logged_every_eval_every_and_equals_a_plain_evaluation(name, image_data, token_data, tmp_path,
                                                                            capsys):
    verb, overrides, factory, factory_name = configs(name, image_data, token_data, tmp_path / "run")
    cfg = compose(verb, [*overrides, *common(tmp_path / "run")])
    task = factory(cfg)
    result = train_from_config(task, cfg, factory_name)
    logged = records(tmp_path / "run")
    assert [s for s, r in sorted(logged.items()) if "val/loss" in r] == [1, 3]
    assert "val/loss=" in capsys.readouterr().out  # the console line of a validation step
    assert result.model.training, "the trainer must put the model back in training mode"
    expected = plain_validation(task, result.model, step=3)
    for key, value in expected.items():
        assert logged[3][f"val/{key}"] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert logged[3]["val/loss"] != pytest.approx(logged[1]["val/loss"], rel=1e-6), "weights changed in between"


def test_a_small_split_is_scored_once_each_validation(image_data, token_data, tmp_path, capsys):
    """eval_batches global batches were cut from the split's endless stream: 8 batches of 4 on this 12-sample split
    scored each sample 2 or 3 times. Now its 3 batches, each sample once, said once."""
    verb, overrides, factory, factory_name = configs("clip", image_data, token_data, tmp_path / "run")
    cfg = compose(verb, [*overrides, *common(tmp_path / "run"), "trainer.eval_batches=8"])
    task = factory(cfg)
    result = train_from_config(task, cfg, factory_name)
    assert capsys.readouterr().out.count(f"[train] validation: the validation split {image_data / 'val'} holds 12 "
                                         "samples, fewer than the 32 of trainer.eval_batches=8 global batches; each "
                                         "validation scores 12 of them, each once") == 1
    expected = plain_validation(task, result.model, step=3, count=3)
    for key, value in expected.items():
        assert records(tmp_path / "run")[3][f"val/{key}"] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_a_split_smaller_than_a_micro_batch_is_refused_before_the_first_update(image_data, tmp_path):
    """A run that skips the CLI's checks (the demo, a caller of train_from_config) is refused when it starts."""
    from megadalle.data.val_pass import SplitSmallerThanBatch
    from megadalle.train.dvae import FACTORY, task_from_config

    write_image_shards(tmp_path / "val", 3, 32, 3)
    cfg = compose("train-dvae", [f"data.shards={image_data}", f"data.val_shards={tmp_path / 'val'}", "dvae=tiny",
                                 "dvae.n_hid=16", "dvae.vocab_size=64", *common(tmp_path / "run")])
    with pytest.raises(SplitSmallerThanBatch, match=f"the validation split {tmp_path / 'val'} holds 3 samples"):
        train_from_config(task_from_config(cfg), cfg, FACTORY)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize("val", ["none", "tars from elsewhere"])
def test_a_task_without_validation_data_trains_and_says_so_once(image_data, tmp_path, capsys, val):
    """A `<shards>/val/` of tars without index.json (written by another tool) is no split prepare or encode held out:
    the run went on without it, and its line did not name it."""
    from megadalle.train.dvae import FACTORY, task_from_config

    shards = tmp_path / "only"
    write_image_shards(shards, 8, 32, 8)
    if val != "none":
        write_image_shards(shards / "val", 4, 32, 4)
        (shards / "val" / "index.json").unlink()
    cfg = compose("train-dvae", [f"data.shards={shards}", "dvae=tiny", "dvae.n_hid=16", "dvae.vocab_size=64",
                                 *common(tmp_path / "run")])
    train_from_config(task_from_config(cfg), cfg, FACTORY, verb="train-dvae")
    out = capsys.readouterr().out
    assert out.count("[train-dvae] no validation data for the dvae task") == 1
    assert (f"{shards / 'val'} holds tars but no index.json" in out) == (val != "none")
    assert (f"set data.val_shards={shards / 'val'} to index and use them" in out) == (val != "none")
    assert not any("val/loss" in r for r in records(tmp_path / "run").values())


def test_with_an_ema_validation_and_media_are_of_the_ema_weights_and_training_is_unchanged(image_data, token_data,
                                                                                            tmp_path, capsys):
    """Export and encode ship the EMA: val/loss and the reconstruction grid are those of the EMA weights the run
    saved (load_run(ema=True)), not of the live ones, and swapping them in and out leaves training bit for bit as
    in a run that neither validates nor draws."""
    from megadalle.train.dvae import reconstruction_grid

    def trained(run_dir: Path, *extra: str):
        verb, overrides, factory, factory_name = configs("dvae", image_data, token_data, run_dir)
        cfg = compose(verb, [*overrides, *common(run_dir), "trainer.ema=0.5", *extra])
        task = factory(cfg)
        train_from_config(task, cfg, factory_name)
        return task, records(run_dir)

    task, logged = trained(tmp_path / "run", f"trainer.media_every={STEPS}")
    assert "val/ metrics and media are of the EMA weights (trainer.ema=0.5)" in capsys.readouterr().out
    averaged, _ = load_run(tmp_path / "run", ema=True)
    live, _ = load_run(tmp_path / "run", ema=False)
    expected = plain_validation(task, averaged, step=3)
    for key, value in expected.items():
        assert logged[3][f"val/{key}"] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert plain_validation(task, live, step=3)["loss"] != pytest.approx(expected["loss"], rel=1e-4), \
        "the EMA must differ from the live weights, or equality proves little"
    grid = np.asarray(Image.open(tmp_path / "run" / "reconstructions" / f"step_{STEPS:08d}.png"))
    np.testing.assert_array_equal(grid, reconstruction_grid(averaged, task._last_images))

    _, quiet = trained(tmp_path / "quiet", "trainer.eval_every=0")
    assert [quiet[s]["loss"] for s in range(STEPS)] == [logged[s]["loss"] for s in range(STEPS)]
