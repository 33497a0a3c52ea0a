"""Config composition and validation: bad values are refused with their key and value named."""
import pytest
from hydra.errors import ConfigCompositionException

from megadalle.attention.masks import layer_kinds
from megadalle.config import ConfigError, build
from megadalle.config.compose import compose, conf_dir
from megadalle.config.model import TransformerConfig


def model_config(*overrides):
    return build(TransformerConfig, compose("plan", ["model=tiny", *overrides]).model, "model")


def test_12b_is_the_papers_model():
    cfg = build(TransformerConfig, compose("plan", ["model=12b"]).model, "model")
    assert (cfg.n_layers, cfg.n_heads, cfg.head_dim, cfg.d_model) == (64, 62, 64, 3968)
    assert (cfg.text_len, cfg.text_vocab, cfg.grid_size, cfg.image_vocab) == (256, 16384, 32, 8192)


@pytest.mark.parametrize("size", ["tiny", "small", "1b", "12b"])
def test_every_model_size_validates(size):
    build(TransformerConfig, compose("plan", [f"model={size}"]).model, "model")


@pytest.mark.parametrize("override,message", [
    ("model.d_model=100", "model.d_model=100: must equal n_heads * head_dim = 4 * 32 = 128"),
    ("model.conv_kernel=4", "model.conv_kernel=4: must be odd"),
    ("model.attention_pattern=[row,spiral]", "model.attention_pattern[1]='spiral': unknown mask kind"),
    ("model.last_layer_attention=diagonal", "model.last_layer_attention='diagonal': unknown mask kind"),
    ("model.text_len=0", "model.text_len=0: must be positive"),
    ("model.grid_size=-2", "model.grid_size=-2: must be positive"),
    ("model.attention_pattern=[row,row,row,row,column]", "is longer than n_layers=4: its kinds past layer 4 would "
     "never be used; set model.attention_pattern=[row,row,row] (layers row,row,row,conv; no column attention) or "
     "another pattern of at most 4 kinds, or model.n_layers=5 or more"),
    ("model.attention_backend=cuda", "model.attention_backend='cuda': expected one of"),
    ("model.text_pad_id=512", "model.text_pad_id=512: must be a token id below text_vocab=512"),
    ("model.text_vocab=1", "model.text_vocab=1: needs a word besides the pad"),
    ("model.attention_backend=triton model.n_heads=16 model.head_dim=8",
     "model.head_dim=8: attention_backend=triton serves head_dim in (16, 32, 64, 128)"),
    ("model.dropout=1.0", "model.dropout=1.0: must be in [0, 1)"),
    ("model.text_loss_weight=0 model.image_loss_weight=0",
     "model.image_loss_weight=0.0: text and image loss weights cannot both be zero"),
])
def test_bad_values_name_key_and_value(override, message):
    with pytest.raises(ConfigError) as err:
        model_config(*override.split())
    assert message in str(err.value)


@pytest.mark.parametrize("override", [
    "model.dropout=0.999", "model.dropout=0.0",
    "model.text_loss_weight=0 model.image_loss_weight=1", "model.text_loss_weight=1 model.image_loss_weight=0",
])
def test_values_at_the_edge_of_the_refused_ones_are_accepted(override):
    """Dropout 1.0 zeroes every activation and two zero loss weights leave nothing to train: each is refused, but
    a dropout just under 1 and a single zero weight (text-only or image-only training) are legitimate."""
    model_config(*override.split())


@pytest.mark.parametrize("overrides, pattern, trains, layers", [
    ("model=12b model.n_layers=2", "[row]", "(layers row,conv; no column attention)", ["row", "conv"]),
    ("model=small model.n_layers=1", "[row]", "(layers conv; no row or column attention)", ["conv"]),
    ("model=small model.last_layer_attention=null model.n_layers=2", "[row,column]", "(layers row,column)",
     ["row", "column"])])
def test_fewer_layers_than_the_pattern_names_both_ways_out_and_each_works(overrides, pattern, trains, layers):
    """`model.n_layers=2` under the paper's 4-kind pattern was refused naming the pattern alone, with no way out: the
    key the user changed was n_layers. The shorter pattern offered says what it trains: a first version offered
    [row,column], whose column layer the conv last layer replaces."""
    with pytest.raises(ConfigError) as err:
        build(TransformerConfig, compose("plan", overrides.split()).model, "model")
    ways = f"set model.attention_pattern={pattern} {trains} or another pattern of at most {len(layers)} kind"
    assert ways in str(err.value) and str(err.value).endswith(", or model.n_layers=4 or more")
    for way_out, kinds in ((f"model.attention_pattern={pattern}", layers), ("model.n_layers=4", None)):
        model = build(TransformerConfig, compose("plan", [*overrides.split(), way_out]).model, "model")
        got = layer_kinds(model.n_layers, model.attention_pattern, model.last_layer_attention)
        assert got == (kinds or ["row", "column", "row", model.last_layer_attention or "row"])


@pytest.mark.parametrize("temperature, refused", [("2.0", True), ("1.0001", True), ("0", True), ("1.0", False),
                                                  ("0.01", False)])
def test_clip_temperature_above_one_is_refused_before_the_clamp_changes_it(temperature, refused):
    """The trainer clamps CLIP's logit scale to [0, ln max_logit_scale] after every update: init_temperature=2.0
    was accepted and logged 2.0, then 1.0 from the first update on, without a word."""
    from megadalle.config.clip import ClipConfig

    cfg = compose("train-clip", ["clip=tiny", f"clip.init_temperature={temperature}"])
    if not refused:
        build(ClipConfig, cfg.clip, "clip")
        return
    with pytest.raises(ConfigError, match=rf"clip.init_temperature={float(temperature)}: must be in \(0, 1\]"):
        build(ClipConfig, cfg.clip, "clip")


def test_steps_past_what_a_checkpoint_name_holds_are_refused():
    """step_100000000 matched no checkpoint pattern: such checkpoints would have been invisible to resume and
    pruning."""
    from megadalle.config.train import TrainerConfig
    from megadalle.train.checkpoint import TAG, tag_of

    build(TrainerConfig, compose("train", ["trainer.steps=99999999"]).trainer, "trainer")
    assert TAG.match(tag_of(99999999))
    with pytest.raises(ConfigError, match="trainer.steps=100000000: at most 99,999,999: checkpoints are named with 8"):
        build(TrainerConfig, compose("train", ["trainer.steps=100000000"]).trainer, "trainer")


def test_wrong_types_and_unknown_keys_fail_at_composition():
    with pytest.raises(ConfigCompositionException):
        compose("plan", ["model.n_heads=four"])
    with pytest.raises(ConfigError, match=r"no key model.n_haeds; did you mean model.n_heads\?"):
        compose("plan", ["model.n_haeds=4"])  # refused before composing, with the nearest declared key


def test_validation_does_not_rewrite_values():
    cfg = model_config("model.dropout=0.25")
    assert cfg.dropout == 0.25
    cfg.validate()
    assert cfg.dropout == 0.25


@pytest.mark.parametrize("verb", ["train-dvae", "train-clip"])
def test_trainer_tiny_selects_tiny_for_every_training_verb(verb):
    """train-dvae's and train-clip's YAML had a `trainer:` block merged after the group: trainer=tiny kept
    150000 steps and lr 1e-4 (train-dvae) or a 2000-update warm-up (train-clip)."""
    assert compose(verb, ["trainer=tiny"]).trainer == compose("train", ["trainer=tiny"]).trainer


def test_each_training_verb_defaults_to_its_papers_optimisation():
    dvae, clip, dalle = (compose(verb).trainer for verb in ("train-dvae", "train-clip", "train"))
    assert (dvae.steps, dvae.lr, dvae.min_lr, dvae.warmup_steps, dvae.ema, list(dvae.betas), dvae.grad_clip) == \
        (150000, 1e-4, 1.25e-6, 0, 0.999, [0.9, 0.999], 0.0)
    assert (clip.lr, clip.warmup_steps, list(clip.betas), clip.eps, clip.weight_decay, clip.ema) == \
        (5e-4, 2000, [0.9, 0.98], 1e-6, 0.2, None)
    assert (dalle.lr, dalle.warmup_steps, list(dalle.betas), dalle.ema) == (4.5e-4, 5000, [0.9, 0.96], 0.99)
    assert dvae.checkpoint_every == clip.checkpoint_every == dalle.checkpoint_every  # the rest is trainer=default's


def test_a_warm_up_as_long_as_the_run_is_named():
    from megadalle.config.train import TrainerConfig
    from megadalle.train.schedule import warmup_warning

    assert warmup_warning(TrainerConfig(steps=6, warmup_steps=5)) is None
    assert warmup_warning(TrainerConfig(steps=6, warmup_steps=2000, lr=5e-4)) == \
        "trainer.warmup_steps=2000 >= trainer.steps=6: the whole run is warm-up, ending at lr 1.5e-06 of " \
        "trainer.lr=0.0005, with no decay; lower trainer.warmup_steps"


def test_a_resume_that_moves_the_learning_rate_is_named_with_the_decay_steps_that_keep_it():
    """The hunt's run: 100,000 updates (warm-up 5) resumed at step 150 with trainer.steps=220 dropped the learning
    rate from ~1e-3 to ~1e-4 in one update. decay_steps counts after the warm-up: the old span is 99,995."""
    from megadalle.config.train import TrainerConfig
    from megadalle.train.schedule import lr_at, resume_warning

    saved = TrainerConfig(steps=100000, warmup_steps=5, lr=1e-3, min_lr=1e-4)
    assert resume_warning(saved, saved, 150) is None
    assert resume_warning(saved, TrainerConfig(steps=220, warmup_steps=5, lr=1e-3, min_lr=1e-4), 3) is None  # warm-up
    assert resume_warning(saved, TrainerConfig(steps=220, warmup_steps=5, lr=1e-3, min_lr=1e-4), 150) == \
        "the learning rate at step 150, where the run resumes, is 0.000316 now and 0.001 on the curve it trained on " \
        "(trainer.steps=100000 there, 220 now): the schedule changes from here; add trainer.decay_steps=99995 to " \
        "keep the old curve"
    kept = TrainerConfig(steps=220, warmup_steps=5, lr=1e-3, min_lr=1e-4, decay_steps=99995)
    assert resume_warning(saved, kept, 150) is None and lr_at(219, kept) == lr_at(219, saved)


def test_an_installed_package_reads_its_own_conf_not_a_stray_one_beside_it(tmp_path):
    """Installed, the package's parent is site-packages: another distribution's `conf/` there was taken for
    megadalle's, and every verb failed with "Cannot find primary config"."""
    site = tmp_path / "site-packages"
    for folder in (site / "conf", site / "megadalle" / "conf"):
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text("{}")
    assert conf_dir(site / "megadalle") == site / "megadalle" / "conf"


def test_a_checkout_reads_the_conf_beside_its_package(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("{}")
    (tmp_path / "megadalle").mkdir()
    with pytest.raises(FileNotFoundError, match="no conf/ directory"):
        conf_dir(tmp_path / "megadalle")  # no setup.py: not a checkout
    (tmp_path / "setup.py").write_text("")
    assert conf_dir(tmp_path / "megadalle") == tmp_path / "conf"


@pytest.mark.parametrize("verb,override", [
    ("plan", "gpu_mem_gb=inf"), ("plan", "peak_tflops=inf"), ("plan", "deepspeed.zero3_sub_group_blocks=inf"),
    ("train-dvae", "dvae.objective.kl_weight=inf"), ("train", "trainer.lr=inf"),
])
def test_no_float_key_takes_inf_or_nan(verb, override, capsys):
    """`x >= 0` let inf through to a traceback at an int() or a timedelta once the run had started. (nan, and what a
    schema's own range refuses, get the schema's words.)"""
    from megadalle.cli import main

    given = {"plan": [], "train-dvae": ["data.shards=nowhere"], "train": ["data=synthetic"]}[verb]
    assert main([verb, override, *given]) == 2
    assert capsys.readouterr().err == f"megadalle {verb}: {override}: must be a finite number\n"


@pytest.mark.parametrize("override, message", [
    ("image_size=100000", "image_size=100000: must be at most 9459: its square images would exceed max_pixels="),
    ("num_workers=100000", "num_workers=100000: must be null (one a core), 0 (this process) or at most "),
])
def test_prepare_refuses_sizes_and_processes_past_what_it_can_run(override, message, tmp_path, capsys):
    """image_size=100000 was the kernel's OOM killer after the first image, num_workers=100000 a hang."""
    from megadalle.cli import main

    assert main(["prepare", f"input={tmp_path}", f"output={tmp_path / 'out'}", override]) == 2
    assert capsys.readouterr().err.startswith(f"megadalle prepare: {message}")
