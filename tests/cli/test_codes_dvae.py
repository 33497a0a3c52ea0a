"""Token shards re-encoded by another dVAE have the fingerprint of the first codes (same names, counts, sizes): a run
resumed on them, validated on them, and decoded its grids with any dVAE of the right shapes, all in silence. The
digest `encode` records (index.json meta `dvae`) now tells them apart."""
import json
import shutil

import pytest
import torch

from megadalle.cli import main
from megadalle.config.compose import compose
from megadalle.data.index import ShardIndex
from megadalle.train.checkpoint import CheckpointError
from megadalle.train.data_identity import check_data_identity
from tests.cli.preflight_run import TINY, fails


@pytest.fixture(scope="module")
def two_encodes(tmp_path_factory, image_shards):
    """The same images encoded by two tiny dVAEs of the same shapes (8x8 codes of 128, seeds 0 and 1):
    {seed: (token shards, dVAE weights)}."""
    from megadalle.config.dvae import DVAEConfig
    from megadalle.encode import encode_shards
    from megadalle.models.dvae import DVAE
    from megadalle.weights import save_weights

    root = tmp_path_factory.mktemp("two_encodes")
    config = DVAEConfig(image_size=32, n_hid=16, n_blk_per_group=1, n_groups=3, vocab_size=128, n_init=16)
    made = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = DVAE(config).eval()
        weights = save_weights(root / f"dvae{seed}.safetensors", model.state_dict(), kind="dvae", config=config)
        made[seed] = (encode_shards(model, image_shards, root / f"tokens{seed}").root, weights)
    first, second = (ShardIndex.load(made[seed][0]) for seed in (0, 1))
    assert first.fingerprint == second.fingerprint and first.meta["dvae"] != second.meta["dvae"]
    return made


def test_the_data_identity_holds_the_dvae_of_the_codes(two_encodes):
    """The fingerprint alone was all a Transformer's checkpoint recorded of its shards."""
    from megadalle.config.data import DataConfig
    from megadalle.train.task import DataPart
    from megadalle.train.transformer import TransformerTask, task_from_config

    cfg = task_from_config(compose("train", ["data=synthetic", "model=tiny"])).cfg
    part = DataPart(micro_batch=2, grad_accum=1, dp_rank=0, dp_world=1)
    first, second = (TransformerTask(cfg, DataConfig(shards=str(two_encodes[seed][0]), tokenizer="never-read.model"))
                     .data_identity(part) for seed in (0, 1))
    assert first["fingerprint"] == second["fingerprint"]
    assert (first["dvae"], first["grid_size"], first["vocab_size"]) == (
        ShardIndex.load(two_encodes[0][0]).meta["dvae"], 8, 128)
    assert second["dvae"] == ShardIndex.load(two_encodes[1][0]).meta["dvae"]


def test_another_codebook_is_refused_first_new_data_or_not_and_compared_only_where_both_record_it():
    saved = {"fingerprint": "a", "seed": 0, "shuffle": True, "global_batch": 8, "dvae": "d1", "vocab_size": 128}
    for new_data in (False, True):
        with pytest.raises(CheckpointError, match=r"cannot resume step_2: it was trained on codes of another dVAE "
                                                  r"\(its token shards' dvae='d1', data.shards has dvae='d2': encoded "
                                                  r"again since\?\); .*point data.shards at the shards the run "
                                                  r"trained on, or start a new run"):
            check_data_identity(saved, {**saved, "fingerprint": "b", "dvae": "d2"}, "step_2", new_data)
    before = {key: value for key, value in saved.items() if key not in ("dvae", "vocab_size")}
    check_data_identity(before, saved, "step_2")  # a checkpoint from before the codes were recorded
    check_data_identity(saved, before, "step_2")  # shards from elsewhere that record none


@pytest.mark.distributed
def test_a_run_does_not_resume_on_shards_another_dvae_encoded(two_encodes, token_data, tmp_path, capsys):
    command = ["train", *TINY, f"data.tokenizer={token_data[1]}", f"run_dir={tmp_path / 'run'}",
               "trainer.micro_batch=2"]
    assert main([*command, f"data.shards={two_encodes[0][0]}", "trainer.steps=2"]) == 0
    capsys.readouterr()
    assert main([*command, f"data.shards={two_encodes[1][0]}", "trainer.steps=3"]) == 2
    refusal = capsys.readouterr().err.splitlines()[-1]  # after the warning that the learning rate differs
    assert refusal.startswith("megadalle train: cannot resume") and "trained on codes of another dVAE" in refusal


def test_validation_shards_and_the_grids_dvae_must_be_the_dvae_of_data_shards(two_encodes, token_data, tmp_path,
                                                                              capsys):
    from megadalle.preflight import preflight

    (shards, weights), (other, other_weights) = two_encodes[0], two_encodes[1]
    digests = [ShardIndex.load(two_encodes[seed][0]).meta["dvae"] for seed in (0, 1)]
    base = ["train", *TINY, f"data.shards={shards}", f"data.tokenizer={token_data[1]}", f"run_dir={tmp_path / 'run'}",
            "trainer.micro_batch=2"]
    fails(capsys, [*base, "trainer.eval_every=1", f"data.val_shards={other}"],
          f"data.val_shards={other}: codes of another dVAE than data.shards={shards} (index.json meta dvae "
          f"{digests[1]}, {digests[0]} there)")
    fails(capsys, [*base, f"dvae_weights={other_weights}"],
          f"dvae_weights={other_weights}: not the dVAE data.shards={shards} were encoded with (its weights' digest "
          f"{digests[1]}, index.json meta dvae {digests[0]})")
    same_codes = shutil.copytree(shards, tmp_path / "val")
    preflight("train", compose("train", [*base[1:], "trainer.eval_every=1", f"data.val_shards={same_codes}",
                                         f"dvae_weights={weights}"]))
    assert not (tmp_path / "run").exists()


def test_the_grids_dvae_of_a_train_dvae_run_is_the_file_it_exported(two_encodes, tmp_path):
    """As `encode dvae_weights=<run>` reads it (encode.dvae_weights_file), so the digests compare."""
    from megadalle.models.dvae import load_dvae
    from megadalle.encode import dvae_digest
    from megadalle.weights import save_weights

    model = load_dvae(two_encodes[0][1])
    run = tmp_path / "dvae_run"
    save_weights(run / "dvae.safetensors", model.state_dict(), kind="dvae", config=model.cfg)
    (run / "run.json").write_text(json.dumps({"config": {}}))
    assert dvae_digest(str(run)) == ShardIndex.load(two_encodes[0][0]).meta["dvae"]


@pytest.mark.distributed
def test_a_rerun_without_dvae_weights_keeps_the_runs_dvae_on_record(two_encodes, token_data, tmp_path):
    """dvae_weights only draws the grids, so a rerun may leave it out; run.json recorded null then, and `generate
    weights=<run>` and `export` no longer found the run's dVAE. A rerun naming one records it."""
    (shards, weights), other = two_encodes[0], tmp_path / "copy.safetensors"
    run = tmp_path / "run"
    command = ["train", *TINY, f"data.shards={shards}", f"data.tokenizer={token_data[1]}", f"run_dir={run}",
               "trainer.micro_batch=2"]

    def recorded():
        return json.loads((run / "run.json").read_text())["config"]["dvae_weights"]

    assert main([*command, "trainer.steps=1", f"dvae_weights={weights}"]) == 0
    assert main([*command, "trainer.steps=2"]) == 0
    assert recorded() == str(weights)
    shutil.copy(weights, other)
    shutil.copy(weights.with_suffix(".json"), other.with_suffix(".json"))
    assert main([*command, "trainer.steps=3", f"dvae_weights={other}"]) == 0
    assert recorded() == str(other)
