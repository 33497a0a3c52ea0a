"""Sample grids while the Transformer trains: <run>/samples/step_N.png every trainer.media_every updates,
the same fixed validation captions each time, equal to sampling the saved weights (their EMA, when the run keeps
one); logged to wandb; pipelines and ZeRO-3 too."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from megadalle.config.compose import compose
from megadalle.config.dvae import DVAEConfig
from megadalle.models.dvae import DVAE
from megadalle.sampling.load import load_model
import megadalle.train.media as media
from megadalle.train.loop import train_from_config
from megadalle.train.media import Picture
from megadalle.train.transformer import FACTORY, task_from_config
from megadalle.weights import save_weights

sys.path.insert(0, str(Path(__file__).parents[1] / "distributed"))
import dist_launch as launch  # noqa: E402
from dist_tokens import make_token_data  # noqa: E402

CAPTIONS, PER_CAPTION, SIDE = 2, 3, 32


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(token shards with a val/ split, tokenizer, dVAE weights for the tiny model's 8x8 grid of 128 codes)."""
    root = tmp_path_factory.mktemp("grid")
    shards, tok = make_token_data(root / "train")
    make_token_data(root / "val", samples=8)
    (root / "val" / "tokens").rename(shards / "val")  # the held-out split, where the data config looks
    cfg = DVAEConfig(image_size=SIDE, n_hid=8, n_blk_per_group=1, n_groups=3, vocab_size=128, n_init=8)
    weights = root / "dvae.safetensors"
    save_weights(weights, DVAE(cfg).state_dict(), kind="dvae", config=cfg)
    return shards, tok, weights


def overrides(setup, run_dir: Path, *extra: str) -> list[str]:
    shards, tok, weights = setup
    return [f"data.shards={shards}", f"data.tokenizer={tok}", "data.num_workers=0", "model=tiny", "trainer=tiny",
            "trainer.steps=4", "trainer.micro_batch=2", "trainer.grad_accum=2", "trainer.media_every=2",
            "trainer.checkpoint_every=4", f"dvae_weights={weights}", f"media_captions={CAPTIONS}",
            f"media_samples={PER_CAPTION}", f"run_dir={run_dir}", *extra]


def grid_of_saved_weights(setup, run_dir: Path, ema: bool = False) -> np.ndarray:
    """The grid the task draws for the run's final weights (or their EMA), rebuilt from the checkpoint (not the live
    model)."""
    cfg = compose("train", overrides(setup, run_dir))
    model = load_model(run_dir, "transformer", ema=ema)
    return task_from_config(cfg).media(model.eval(), step=3)["samples"].array


def test_grids_are_written_every_media_every_and_show_the_weights(setup, tmp_path):
    run_dir = tmp_path / "run"
    cfg = compose("train", overrides(setup, run_dir, "logger.mode=offline"))
    task = task_from_config(cfg)
    train_from_config(task, cfg, FACTORY)
    files = sorted(p.name for p in (run_dir / "samples").glob("*.png"))
    assert files == ["step_00000002.png", "step_00000004.png"]
    final = np.asarray(Image.open(run_dir / "samples" / "step_00000004.png"))
    assert final.shape == (CAPTIONS * (SIDE + 2) + 2, PER_CAPTION * (SIDE + 2) + 2, 3)
    first = np.asarray(Image.open(run_dir / "samples" / "step_00000002.png"))
    assert not np.array_equal(first, final), "the weights changed between the two grids"
    np.testing.assert_array_equal(final, grid_of_saved_weights(setup, run_dir))
    val_captions = [s.splitlines()[0] for s in _texts(Path(cfg.data.shards) / "val")][:CAPTIONS]
    assert task.grid.captions == val_captions
    logged = list((run_dir / "wandb").glob("offline-run-*/files/media/images/samples_*.png"))
    assert len(logged) == 2, "each grid is logged to wandb as an image"


def test_picture_converts_to_a_wandb_image():
    import wandb

    image = Picture(np.zeros((4, 6, 3), np.uint8), "a caption").to_wandb()
    assert isinstance(image, wandb.Image) and image._caption == "a caption"


def test_train_refuses_a_missing_dvae_before_training(setup, tmp_path, capsys):
    from megadalle.cli import main

    assert main(["train", *overrides(setup, tmp_path / "run", f"dvae_weights={tmp_path / 'nope'}")]) == 2
    assert "dvae_weights=" in capsys.readouterr().err and not (tmp_path / "run").exists()


PARTITIONED = {"pipe": (), "zero3": ("++deepspeed.extra.zero_optimization.stage3_param_persistence_threshold=0",)}


@pytest.mark.distributed
@pytest.mark.parametrize("layout", sorted(PARTITIONED))
def test_a_run_with_an_ema_draws_the_grid_of_its_ema_weights_and_trains_on_unchanged(layout, setup, tmp_path):
    """The grid is that of the whole model's EMA weights, the ones export ships, not the live ones, and training
    goes on as in a run that draws no grid. A pipeline's stages send rank 0 their layers with the EMA swapped in.
    ZeRO-3 has every parameter partitioned (persistence threshold 0): the EMA pieces go into the partitions, and
    sampling reads the position tables and the head's rows outside any module forward, where ZeRO-3's hooks do not
    gather (before media gathered the model, the first grid failed on an empty tensor). Both draw from the whole
    model or the grid would differ from the saved weights'. (The EMA swap of ZeRO-3's persistent parameters is
    checked by tests/eval/test_validation_layouts.py.)"""
    def trained(name: str, media_every: int) -> Path:
        run_dir = tmp_path / name
        base = [o for o in overrides(setup, run_dir, f"deepspeed={layout}", "logger=none", "trainer.ema=0.5",
                                     *PARTITIONED[layout]) if not o.startswith("trainer.media_every=")]
        opts = {"overrides": [*base, f"trainer.media_every={media_every}"], "probe": str(tmp_path / f"{name}.pt")}
        launch.run(2, opts, tmp_path / f"logs-{name}", script="dist_train_worker.py")
        return run_dir

    drawn, quiet = trained("drawn", 2), trained("quiet", 0)
    assert launch.losses(drawn) == launch.losses(quiet)
    final = np.asarray(Image.open(drawn / "samples" / "step_00000004.png"))
    np.testing.assert_array_equal(final, grid_of_saved_weights(setup, drawn, ema=True))
    assert not np.array_equal(final, grid_of_saved_weights(setup, drawn)), "the EMA must differ from the live weights"


class FailingDrawing:
    """A task whose drawing records what it sees of the model and DeepSpeed's hooks, then fails."""

    def __init__(self, offload, seen: list):
        self.offload, self.seen = offload, seen

    def media(self, model, step):
        self.seen.append({"hooks": len(self.offload.forward_hooks),
                          "whole": all(p.numel() == p.ds_numel for p in model.parameters())})
        raise RuntimeError("the drawing failed")


def test_zero3_draws_without_deepspeeds_hooks_and_a_failed_drawing_gives_them_back(setup, tmp_path, monkeypatch):
    """With ZeRO-3's hooks on, every module's forward at every decoded token went through its fetch and release (the
    2-rank ZeRO-3 grid above took ~5 s, ~0.4 s now): they are off while a grid is drawn, and back after it, even after a
    drawing that failed, or ZeRO-3 would go on training on empty partitions."""
    from megadalle.cli import main

    seen, collect = [], media.collect

    def failing_first(task, built, step, rank):
        offload = built.engine.optimizer.parameter_offload
        hooks = len(offload.forward_hooks)
        with pytest.raises(RuntimeError, match="the drawing failed"):
            collect(FailingDrawing(offload, seen), built, step, rank)
        seen[-1]["hooks after"] = len(offload.forward_hooks) - hooks
        seen[-1]["partitioned after"] = all(p.numel() == 0 for p in built.model.parameters())
        return collect(task, built, step, rank)

    monkeypatch.setattr(media, "collect", failing_first)

    def trained(name: str, media_every: int) -> Path:
        run_dir = tmp_path / name
        base = [o for o in overrides(setup, run_dir, "logger=none", *PARTITIONED["zero3"], "deepspeed=zero3")
                if not o.startswith("trainer.media_every=")]
        assert main(["train", *base, f"trainer.media_every={media_every}"]) == 0
        return run_dir

    drawn = trained("drawn", 2)
    assert seen == [{"hooks": 0, "whole": True, "hooks after": 0, "partitioned after": True}] * 2
    assert sorted(p.name for p in (drawn / "samples").glob("*.png")) == ["step_00000002.png", "step_00000004.png"]
    assert launch.losses(drawn) == launch.losses(trained("quiet", 0))


def _texts(shards: Path) -> list[str]:
    from megadalle.data.shards import iter_samples

    return [s["txt"] for s in iter_samples(shards, ["txt"])]


def test_grid_captions_are_each_samples_first_caption_as_evaluate_reads_them(tmp_path):
    """A blank first line, padding and a sample without a caption: the grid shows what training and evaluate call
    the sample's first caption (megadalle.data.captions), never "" (an unconditional sample under no label)."""
    from megadalle.data.shards import ShardWriter
    from megadalle.evaluate import shard_captions
    from megadalle.train.sample_grid import first_captions

    with ShardWriter(tmp_path / "shards") as writer:
        for i, txt in enumerate(["\n  a red circle  \nsecond", " \n\n", "a blue square", "a green tree"]):
            writer.write({"__key__": f"{i:04d}", "txt": txt})
    assert first_captions(tmp_path / "shards", 2) == ["a red circle", "a blue square"]
    assert first_captions(tmp_path / "shards", 3) == shard_captions(str(tmp_path / "shards"), 3)


def blank_tokens(root: Path, samples: int = 4) -> Path:
    """Token shards whose samples have no caption (an empty txt), as a held-out set of uncaptioned images gives."""
    from megadalle.data.shards import ShardWriter

    with ShardWriter(root, meta={"grid_size": 8, "vocab_size": 128, "image_size": SIDE}) as writer:
        for i in range(samples):
            writer.write({"__key__": f"{i:06d}", "codes.npy": np.zeros((8, 8), np.uint16), "txt": " \n"})
    return root


def test_a_validation_split_without_captions_gives_way_to_the_training_shards(setup, tmp_path):
    """Its grid was an empty list of images: torch.cat failed at the first grid, media_every updates into the run."""
    from megadalle.config import build
    from megadalle.config.model import TransformerConfig
    from megadalle.models.transformer import Transformer

    cfg = compose("train", overrides(setup, tmp_path / "run", f"data.val_shards={blank_tokens(tmp_path / 'val')}"))
    task = task_from_config(cfg)
    model = Transformer(build(TransformerConfig, cfg.model, "model")).eval()
    grid = task.media(model, step=1)["samples"].array
    assert grid.shape == (CAPTIONS * (SIDE + 2) + 2, PER_CAPTION * (SIDE + 2) + 2, 3)
    assert task.grid.captions == [s.splitlines()[0] for s in _texts(Path(cfg.data.shards))][:CAPTIONS]


def test_a_dvae_run_directory_decodes_with_the_file_it_exported(setup, tmp_path):
    """As encode reads it (encode.dvae_weights_file): the export, the EMA the shards were encoded with; the grid read
    the run's newest checkpoint, its live weights. An export the run trained past is refused, naming the fix."""
    import json

    import torch

    from megadalle.errors import UserError
    from megadalle.train.dvae import FACTORY as DVAE_FACTORY
    from megadalle.train.dvae_export import record_export
    from megadalle.train.sample_grid import SampleGrid

    shards, tok, weights = setup
    run = tmp_path / "dvae-run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"task_factory": DVAE_FACTORY, "config": {}}))
    exported = load_model(weights, "dvae")
    save_weights(run / "dvae.safetensors", exported.state_dict(), kind="dvae", config=exported.cfg)
    dvae, _ = SampleGrid(run, tok, [("data.shards", shards)], 1, 1)._models(torch.device("cpu"))
    for name, tensor in exported.state_dict().items():
        assert torch.equal(dvae.state_dict()[name], tensor), name
    record_export(run, 1)
    (run / "checkpoints" / "step_00000002").mkdir(parents=True)
    (run / "checkpoints" / "step_00000002" / "manifest.json").write_text(json.dumps({"files": {}}))
    with pytest.raises(UserError, match="holds the weights of step 1, and the run has trained to step 2"):
        SampleGrid(run, tok, [("data.shards", shards)], 1, 1)._models(torch.device("cpu"))


def test_the_grid_keys_help_says_captions_are_rows_and_samples_columns():
    """The help said each sample was a row: the grid has a row per caption, a column per sample."""
    from megadalle.config.help import field_docs
    from megadalle.config.train_verbs import TrainConfig

    docs = field_docs(TrainConfig)
    assert "one row each" in docs["media_captions"] and "row" not in docs["media_samples"]
    assert "columns" in docs["media_samples"]
    yaml = (Path(__file__).parents[2] / "conf" / "train.yaml").read_text()
    line = next(line for line in yaml.splitlines() if line.startswith("media_samples:"))
    assert "columns" in line and "row" not in line
