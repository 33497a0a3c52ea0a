"""Group keys that interpolate other groups' keys resolve against the whole config, as hydra resolves them, and the
training verbs' run keys set through an interpolation are typed, read and recorded as their fields declare."""
import json

import pytest

from megadalle.config import ConfigError, build, typed_container
from megadalle.config.compose import compose
from megadalle.config.model import TransformerConfig
from megadalle.config.train import RunConfig, TrainerConfig
from megadalle.preflight.runs import check_run_dir
from megadalle.train import loop

TINY = ["data=synthetic", "model=tiny", "trainer=tiny", "logger=none"]


def test_a_group_key_resolves_a_full_path_into_its_own_group_and_others():
    cfg = compose("train", [*TINY, "trainer.lr=${trainer.min_lr}", "trainer.min_lr=1e-5", "seed=3",
                            "trainer.warmup_steps=${seed}", "model.n_layers=${model.n_heads}"])
    trainer, model = build(TrainerConfig, cfg.trainer, "trainer"), build(TransformerConfig, cfg.model, "model")
    assert (trainer.lr, trainer.warmup_steps, model.n_layers) == (1e-5, 3, model.n_heads)


def test_an_interpolation_to_no_key_names_the_key_that_holds_it():
    cfg = compose("train", [*TINY, "trainer.lr=${trainer.nope}"])
    with pytest.raises(ConfigError, match=r"^trainer\.lr: Interpolation key 'trainer.nope' not found$"):
        build(TrainerConfig, cfg.trainer, "trainer")


def env_config(monkeypatch, **env: str):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return compose("train", [*TINY, "seed=${oc.env:SEED}", "new_data=${oc.env:ND}"])


def test_run_keys_from_the_environment_are_typed(monkeypatch):
    record = typed_container(env_config(monkeypatch, SEED="7", ND="false"), RunConfig)
    assert (record["seed"], record["new_data"]) == (7, False)


def test_a_run_key_that_is_not_its_type_is_refused_by_name(monkeypatch):
    with pytest.raises(ConfigError, match=r"^new_data: .*'maybe'"):
        typed_container(env_config(monkeypatch, SEED="7", ND="maybe"), RunConfig)


def test_train_reads_and_records_the_typed_run_keys(monkeypatch):
    """new_data=${oc.env:ND} with ND=false was bool('false'): a resume on other data went on as new_data=true; and
    seed=${oc.env:SEED} was recorded as '7', so a later seed=7 was refused as another seed."""
    seen = {}
    monkeypatch.setattr(loop, "train", lambda task, trainer, ds, logger, run: seen.setdefault("run", run))
    loop.train_from_config(None, env_config(monkeypatch, SEED="7", ND="false"))
    run = seen["run"]
    assert (run.seed, run.new_data, run.config["seed"], run.config["new_data"]) == (7, False, 7, False)


def test_a_rerun_compares_the_typed_seed(monkeypatch, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = typed_container(compose("train", [*TINY, "seed=7", f"run_dir={run_dir}"]), RunConfig)
    (run_dir / "run.json").write_text(json.dumps({"config": config}))
    monkeypatch.setenv("SEED", "7")
    check_run_dir("train", compose("train", [*TINY, "seed=${oc.env:SEED}", f"run_dir={run_dir}"]))
