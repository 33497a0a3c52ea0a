"""The demo's closing part on untrained models, in seconds: the dVAE check, the judged held-out and seen
captions (mean and standard error over captions), demo.json and the headline line. Training is replaced by
random tiny models of the demo's shapes; test_demo.py runs the real thing."""
import json
import math
import re

import pytest

import megadalle.demo as demo
from megadalle.demo_verbs import trainer_overrides
from megadalle.config import build
from megadalle.config.clip import ClipConfig
from megadalle.config.compose import compose
from megadalle.config.demo import DemoConfig
from megadalle.config.dvae import DVAEConfig
from megadalle.config.model import TransformerConfig
from megadalle.models.clip import CLIP
from megadalle.models.dvae import DVAE
from megadalle.models.transformer import Transformer
from megadalle.weights import save_weights


def random_models(d, out, shards, tokenizer, vocab, timer, seed):
    """Stands in for train_models: untrained models of the demo's shapes, saved where the demo reads them."""
    dvae_cfg = build(DVAEConfig, {"image_size": d.image_size, "n_hid": 8, "n_blk_per_group": 1,
                                  "n_groups": d.dvae_groups, "vocab_size": 16, "n_init": 8}, "dvae")
    model_cfg = TransformerConfig(text_len=d.text_len, text_vocab=vocab, grid_size=dvae_cfg.grid_size, image_vocab=16,
                                  n_layers=2, n_heads=2, head_dim=8, d_model=16, conv_kernel=3,
                                  attention_pattern=["row", "column"])
    clip_cfg = ClipConfig(text_len=d.text_len, text_vocab=vocab, text_width=16, text_layers=1, text_heads=2,
                          image_size=d.image_size, patch_size=8, vision_width=16, vision_layers=1, vision_heads=2,
                          embed_dim=8)
    for name, module, kind, cfg in (("model", Transformer(model_cfg), "transformer", model_cfg),
                                    ("dvae", DVAE(dvae_cfg), "dvae", dvae_cfg), ("clip", CLIP(clip_cfg), "clip", clip_cfg)):
        save_weights(out / f"{name}.safetensors", module.state_dict(), kind, cfg)


def test_demo_reports_held_out_headline_with_standard_error_and_the_dvae_check(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo, "train_models", random_models)
    out = tmp_path / "demo"
    cfg = compose("demo", ["demo=fast", "demo.per_scene=2", "demo.holdout=4", "demo.seen=2", "demo.samples=3",
                           "demo.keep=2", f"output={out}"])
    assert demo.run(cfg) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "demo.json").read_text())
    held = summary["accuracy"]["heldout"]
    assert held["colour+shape+position"]["captions"] == 4 and summary["accuracy"]["seen"]["colour+shape"]["captions"] == 2
    for group in ("heldout", "seen"):
        for criterion in ("colour+shape+position", "colour+shape"):
            row = summary["accuracy"][group][criterion]
            assert 0 <= row["reranked"] <= 1 and 0 <= row["raw"] <= 1 and row["reranked_se"] is not None
            assert re.search(rf"^\[demo\] {group} \(\d captions\), {re.escape(criterion)}: \d+%( ± \d+%)? of CLIP's best 2, "
                             rf"\d+%( ± \d+%)? of all 3 samples \(chance \d+%\)$", printed, re.M), printed
        assert held["colour+shape"]["raw"] >= held["colour+shape+position"]["raw"]
    assert summary["headline"] == {"group": "heldout", "accuracy": held["colour+shape+position"]["reranked"],
                                   "se": held["colour+shape+position"]["reranked_se"]}
    assert printed.rstrip().endswith(f"caption accuracy: {summary['headline']['accuracy']:.0%} (chance 2%)")
    check = summary["dvae"]
    assert check["images"] == 48 and 0 < check["codes_in_use"] <= 1 and 1 <= check["perplexity"] <= 16
    assert 0 <= check["reconstructions_kept"] <= 1
    assert len(list((out / "grids" / "heldout").glob("*.png"))) == 4


def test_demo_config_rejects_bad_holdout_and_sampling_values():
    from megadalle.errors import UserError

    for field, value in (("holdout", 13), ("top_p", 0.0), ("temperature", 0.0), ("check_per_scene", 0),
                         ("clip_images", "recon"), ("threads", -1), ("threads", 100_000), ("seen", -1), ("lr", -1.0),
                         ("dvae_lr", 0.0), ("clip_lr", -1.0), ("dvae_groups", 3_000_000_000),
                         ("temperature", math.inf)):
        with pytest.raises(UserError, match=f"demo.{field}"):
            build(DemoConfig, {field: value}, "demo")


def test_a_demo_seed_that_is_no_integer_is_one_line_before_any_stage(tmp_path, capsys):
    """The demo's own keys are typed before it writes anything: `seed=abc` was a ValueError traceback."""
    from megadalle.cli import main

    assert main(["demo", "seed=abc", f"output={tmp_path / 'demo'}"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["megadalle demo: seed: Value 'abc' of type 'str' could not be converted to "
                                        "Integer"]
    assert not (tmp_path / "demo").exists()


def test_dvae_overrides_reach_the_demos_train_dvae_and_its_paths_stay_the_demos(tmp_path, monkeypatch):
    import megadalle.train.dvae as train_dvae_module
    from megadalle.config import ConfigError

    seen = {}
    monkeypatch.setattr(train_dvae_module, "train_dvae", lambda cfg: seen.setdefault("cfg", cfg))
    d = build(DemoConfig, compose("demo", ["demo=fast", "demo.dvae_overrides=['dvae.decoder_min_width=128','seed=3']"]).demo,
              "demo")
    demo.train_demo_dvae(d, tmp_path, tmp_path / "shards")
    assert seen["cfg"].dvae.decoder_min_width == 128 and seen["cfg"].dvae.n_hid == 64  # on top of dvae=tiny
    assert seen["cfg"].seed == 3
    with pytest.raises(ConfigError, match=r"demo.dvae_overrides\[1\]='data.shards=/elsewhere': the demo sets"):
        build(DemoConfig, compose("demo", ["demo.dvae_overrides=['seed=3','data.shards=/elsewhere']"]).demo, "demo")
    with pytest.raises(ConfigError, match=r"demo.dvae_overrides\[0\]='dvae.n_hid': must be a KEY=VALUE"):
        build(DemoConfig, compose("demo", ["demo.dvae_overrides=[dvae.n_hid]"]).demo, "demo")


@pytest.mark.parametrize("override, message", [
    ("dvae.nonkey=3", "dvae.nonkey=3: megadalle train-dvae has no key dvae.nonkey"),
    ("dvae.n_groups=-1", "dvae.n_groups=-1: must be positive")])
def test_a_bad_dvae_override_is_refused_before_the_demo_makes_its_data(tmp_path, monkeypatch, capsys, override,
                                                                       message):
    from megadalle.cli import main

    monkeypatch.setattr(demo, "make_data", lambda *args: pytest.fail("the demo started on a config it refuses later"))
    assert main(["demo", f"demo.dvae_overrides=['{override}']", f"output={tmp_path / 'out'}"]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_bracketed_list_value_is_refused_with_its_quoted_list_form(capsys):
    """`demo.dvae_overrides=[dvae.n_groups=2]` is no value hydra reads; the fix offered for a list quotes its
    items (quoting the whole value would make one string, which a list setting refuses)."""
    import shlex

    from megadalle.cli import main

    assert main(["demo", "demo.dvae_overrides=[dvae.n_groups=2, seed=3]"]) == 2
    listed = shlex.split(capsys.readouterr().err.split(" (as text), or ")[1].removesuffix(" (as a list)\n"))[0]
    d = build(DemoConfig, compose("demo", [listed]).demo, "demo")
    assert d.dvae_overrides == ["dvae.n_groups=2", "seed=3"]


def test_every_stage_runs_under_the_demos_seed(tmp_path, monkeypatch):
    """`megadalle demo seed=S` draws its data, split and samples from S and trains every stage under root seed S,
    as `megadalle <verb> seed=S` would; dvae_overrides still win for the dVAE."""
    import types

    import megadalle.data.tokenizer as tokenizer_module
    import megadalle.encode as encode_module
    import megadalle.export as export_module
    import megadalle.models.dvae as dvae_module
    import megadalle.train.clip as clip_module
    import megadalle.train.dvae as train_dvae_module
    import megadalle.train.loop as loop_module
    import megadalle.train.transformer as transformer_module

    seeds = {}

    def seed_of(stage: str, result=None):
        """A stand-in for a stage's entry point: notes the root seed of the config it is given."""
        return lambda cfg, *_: (seeds.__setitem__(stage, cfg.seed), result)[1]

    monkeypatch.setattr(demo, "write_dataset", lambda *args: None)
    monkeypatch.setattr(demo, "prepare_folder", lambda *args: None)
    monkeypatch.setattr(demo, "check_captions_fit", lambda *args: None)
    monkeypatch.setattr(tokenizer_module, "train_tokenizer", lambda *args: seeds.__setitem__("tokenizer", args[-1]))
    monkeypatch.setattr(train_dvae_module, "train_dvae", seed_of("train-dvae", tmp_path))
    monkeypatch.setattr(dvae_module, "load_dvae", lambda path: types.SimpleNamespace(cfg=DVAEConfig()))
    monkeypatch.setattr(encode_module, "encode_shards", lambda *args, **kwargs: None)
    monkeypatch.setattr(clip_module, "train_clip", seed_of("train-clip", tmp_path))
    monkeypatch.setattr(transformer_module, "task_from_config", lambda cfg: cfg)
    monkeypatch.setattr(loop_module, "train_from_config",
                        seed_of("train", types.SimpleNamespace(run_dir=tmp_path, stopped_by_signal=False)))
    monkeypatch.setattr(export_module, "export", lambda *args, **kwargs: None)
    d = build(DemoConfig, compose("demo", ["demo=fast", "demo.clip_images=original"]).demo, "demo")
    demo.make_data(d, tmp_path, seed=4)
    demo.train_models(d, tmp_path, tmp_path / "shards", tmp_path / "tokenizer.model", 64, demo.Timer(), seed=4)
    assert seeds == {"tokenizer": 4, "train-dvae": 4, "train-clip": 4, "train": 4}
    seeds.clear()
    d = build(DemoConfig, compose("demo", ["demo=fast", "demo.dvae_overrides=['seed=9']"]).demo, "demo")
    demo.train_demo_dvae(d, tmp_path, tmp_path / "shards", seed=4)
    assert seeds == {"train-dvae": 9}


@pytest.mark.parametrize("verb,group", [("train-dvae", "dvae"), ("train-clip", "clip"), ("train", "tiny")])
def test_every_training_stage_is_configured_to_train_on_a_gpu_machine_too(verb, group, monkeypatch):
    """On a GPU precision=auto is bf16, which ZeRO stage 0 (the demo's) refuses with fp32 accumulation: the demo
    stopped at its first training stage wherever CUDA was present."""
    from megadalle.config.train import DeepSpeedConfig, TrainerConfig
    from megadalle.train import engine

    monkeypatch.setattr(engine.torch.cuda, "is_available", lambda: True)
    cfg = compose(verb, trainer_overrides(group, 10, 4, 1e-3))
    trainer = build(TrainerConfig, cfg.trainer, "trainer")
    engine.precision_config(build(DeepSpeedConfig, cfg.deepspeed, "deepspeed"), engine.training_dtype(trainer.precision))


def test_a_stage_stopped_by_a_signal_stops_the_demo_with_status_75(tmp_path, monkeypatch, capsys):
    """Ctrl-C in a training stage checkpointed and stopped it, and the demo went on to the next stage with the
    weights an earlier demo had left in the folder (or none)."""
    import megadalle.encode

    monkeypatch.setattr(demo, "train_demo_dvae", lambda *args: None)
    monkeypatch.setattr(megadalle.encode, "encode_shards", lambda *a, **k: pytest.fail("the next stage ran"))
    with pytest.raises(demo.DemoStopped) as stopped:
        demo.train_models(None, tmp_path, tmp_path, tmp_path, 0, demo.Timer(), 0)
    assert stopped.value.stage == "train-dvae"

    def stopped_in_train(d, output, seed, timer):
        with timer.stage("train", tmp_path / "runs/dalle"):
            demo.finished("train", False)

    monkeypatch.setattr(demo, "run_demo", stopped_in_train)
    assert demo.run(compose("demo", [f"output={tmp_path}"])) == 75
    assert capsys.readouterr().err == "megadalle demo: stopped by a signal in its train stage; kept no finished " \
                                      "stage and no checkpoint of train yet; rerun the same command to continue " \
                                      "from there\n"
