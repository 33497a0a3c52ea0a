"""Checks before any process group starts: required keys, paths, shards against model and tokenizer.

Each failure is one line on stderr (on every rank, after its rank when there are several) and exit code 2, and no process group was started.
"""
import json
import subprocess
import sys

import pytest
import torch

from megadalle.cli import main
from megadalle.config.compose import compose
from megadalle.config.required import missing
from tests.cli.preflight_run import TINY, fails


def test_yaml_required_keys_stay_required_over_schema_defaults():
    assert missing(compose("train", ["data.shards=x"])) == ["data.tokenizer"]
    assert missing(compose("train", ["data.shards=x", "data.tokenizer=t"])) == []
    assert missing(compose("train-clip")) == ["data.shards", "tokenizer"]
    assert missing(compose("train-dvae", ["data.shards=x"])) == []
    assert compose("train-dvae", ["data.shards=x"]).data.tokenizer is None  # images.yaml does not require it


def test_train_without_tokenizer_fails_before_deepspeed(capsys, token_shards):
    fails(capsys, ["train", *TINY, f"data.shards={token_shards[0]}"],
          "megadalle train: required key not set: data.tokenizer (give data.tokenizer=... on the command line)")


def test_missing_paths_are_named(capsys, token_shards, tmp_path):
    shards, tok = token_shards
    fails(capsys, ["train", *TINY, f"data.shards={tmp_path / 'nope'}", f"data.tokenizer={tok}"],
          f"data.shards={tmp_path / 'nope'}: no such directory")
    fails(capsys, ["train", *TINY, f"data.shards={shards}", f"data.tokenizer={tmp_path / 'tok.model'}"],
          f"data.tokenizer={tmp_path / 'tok.model'}: no such file")
    fails(capsys, ["train", *TINY, f"data.shards={tmp_path}", f"data.tokenizer={tok}"], "index.json not found")
    fails(capsys, ["encode", f"dvae_weights={tmp_path / 'd.safetensors'}", f"input={shards}", "output=x"],
          "dvae_weights=")


@pytest.mark.parametrize("override, expected", [
    ("model.grid_size=4", "model.grid_size=4: the token shards"),
    ("model.image_vocab=64", "model.image_vocab=64: the token shards"),
    ("model.image_vocab=256", "model.image_vocab=256: the token shards"),  # a model generate refuses with its dVAE
    ("model.text_vocab=20", "model.text_vocab=20: the tokenizer"),
    ("model.text_pad_id=3", "model.text_pad_id=3: megadalle's tokenizer pads with id 0"),
])
def test_token_shards_and_tokenizer_must_fit_the_model(capsys, token_shards, override, expected):
    shards, tok = token_shards
    err = fails(capsys, ["train", *TINY, f"data.shards={shards}", f"data.tokenizer={tok}", override], expected)
    assert "(set model." in err


def test_a_tokenizer_megadalle_cannot_use_is_named_by_its_key(capsys, token_shards, image_shards, tmp_path):
    """sentencepiece's default special ids were a ValueError traceback (exit 1), a text file a RuntimeError."""
    from tests.data.sentencepiece_models import captions, sp_model

    default_ids = tmp_path / "default.model"
    default_ids.write_bytes(sp_model(captions(), pad_id=-1, unk_id=0, bos_id=1, eos_id=2))
    (tmp_path / "corpus.txt").write_text("a red circle\n")
    fails(capsys, ["train", *TINY, f"data.shards={token_shards[0]}", f"data.tokenizer={default_ids}"],
          f"megadalle train: data.tokenizer={default_ids}: special ids pad/unk/bos/eos are -1/0/1/2")
    fails(capsys, ["train-clip", "clip=tiny", "trainer=tiny", "logger=none", f"data.shards={image_shards}",
                   f"tokenizer={tmp_path / 'corpus.txt'}"],
          f"megadalle train-clip: tokenizer={tmp_path / 'corpus.txt'}: not a sentencepiece model")


def test_image_shards_are_not_token_shards(capsys, token_shards, image_shards):
    fails(capsys, ["train", *TINY, f"data.shards={image_shards}", f"data.tokenizer={token_shards[1]}"],
          "no codes.npy field")
    fails(capsys, ["train-dvae", "dvae=tiny", "trainer=tiny", "logger=none", f"data.shards={token_shards[0]}"],
          "this verb reads image shards")


def test_image_size_against_the_model(capsys, image_shards, token_shards):
    base = ["trainer=tiny", "logger=none", f"data.shards={image_shards}"]
    fails(capsys, ["train-dvae", "dvae=tiny", "dvae.image_size=64", *base],
          "dvae.image_size=64: the images of data.shards=")
    fails(capsys, ["train-clip", "clip=tiny", "clip.image_size=16", "data.image_size=32", *base,
                   f"tokenizer={token_shards[1]}"], "data.image_size=32: must be null or clip.image_size=16")
    fails(capsys, ["train-clip", "clip=tiny", "clip.image_size=16", "clip.text_vocab=20", *base,
                   f"tokenizer={token_shards[1]}"], "clip.text_vocab=20: the tokenizer")


@pytest.mark.parametrize("rank, world", [("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")])
def test_every_rank_prints_after_its_rank(capsys, monkeypatch, token_shards, rank, world):
    """Rank 0 alone printed it: srun --kill-on-bad-exit killed rank 0 for another rank's exit before it printed, and a
    64-rank job failed with no reason in its log. (Outside a job step Slurm's variables are refused, with this line.)"""
    for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(rank, "1")
    monkeypatch.setenv(world, "2")
    assert main(["train", *TINY, f"data.shards={token_shards[0]}"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "megadalle train: rank 1: required key not set: data.tokenizer (give data.tokenizer=... on the command line)"]


def test_exit_code_and_one_line_from_the_command(token_shards):
    done = subprocess.run([sys.executable, "-m", "megadalle", "train", *TINY, f"data.shards={token_shards[0]}"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "megadalle train: required key not set: data.tokenizer (give data.tokenizer=... on the command line)"]


def wds_tars(root, n=4):
    """Webdataset tars written elsewhere: no index.json, no offset files."""
    import io

    import numpy as np
    import webdataset as wds
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    with wds.TarWriter(str(root / "00000.tar")) as sink:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG")
            sink.write({"__key__": f"k{i}", "jpg": buf.getvalue(), "txt": f"a red circle {i}"})
    return root


@pytest.mark.parametrize("verb, overrides", [
    ("tokenizer", ["input={}", "output=tok.model"]),
    ("train-dvae", ["dvae=tiny", "trainer=tiny", "logger=none", "data.shards={}"]),
])
def test_tars_from_elsewhere_are_indexed_on_first_use(tmp_path, monkeypatch, verb, overrides):
    """As the README promises: a verb given un-indexed tars indexes them, it does not ask for `megadalle index`."""
    from megadalle.preflight import preflight

    monkeypatch.chdir(tmp_path)
    root = wds_tars(tmp_path / "wds")
    preflight(verb, compose(verb, [o.format(root) for o in overrides]))
    assert (root / "index.json").is_file()


def test_a_tar_file_given_for_a_folder_says_so(capsys, image_shards):
    tar = image_shards / "shard-000000.tar"
    fails(capsys, ["train-dvae", "dvae=tiny", "trainer=tiny", "logger=none", f"data.shards={tar}"],
          f"data.shards={tar}: a file, not a folder of shards; give its folder: data.shards={image_shards}")


@pytest.mark.parametrize("name, what", [("captions.csv", "a manifest"), ("photo.JPG", "an image")])
def test_a_manifest_or_an_image_given_for_shards_is_sent_to_prepare(capsys, tmp_path, name, what):
    """Its folder, the advice for any file, held images and a manifest: no shards either, and the next run said
    to index a folder with no tar."""
    given = tmp_path / name
    given.write_text("image,caption\n")
    fails(capsys, ["tokenizer", f"input={given}", f"output={tmp_path / 'tok.model'}"],
          f"input={given}: {what}, not a folder of shards: make shards with `megadalle prepare input={given} "
          "output=SHARDS` and use SHARDS instead")


def dvae_weights(path, image_size, vocab_size=64):
    from megadalle.config.dvae import DVAEConfig
    from megadalle.models.dvae import DVAE
    from megadalle.weights import save_weights

    config = DVAEConfig(image_size=image_size, n_hid=16, n_blk_per_group=1, n_groups=3, vocab_size=vocab_size, n_init=16)
    return save_weights(path, DVAE(config).state_dict(), kind="dvae", config=config)


def test_encode_refuses_images_smaller_than_the_dvae_input(capsys, image_shards, tmp_path):
    """train-dvae and train-clip refuse to upscale stored images; so does encode."""
    weights = dvae_weights(tmp_path / "dvae64.safetensors", 64)
    fails(capsys, ["encode", f"dvae_weights={weights}", f"input={image_shards}", f"output={tmp_path / 'tok'}"],
          f"dvae_weights={weights} (a dVAE of 64 px): the images of input={image_shards} are 32 px")


def test_encode_takes_a_dvae_run_directory(capsys, image_shards, tmp_path):
    """A train-dvae run directory holds its exported dvae.safetensors: encode reads that."""
    run = tmp_path / "runs" / "dvae" / "default"
    dvae_weights(run / "dvae.safetensors", 32)
    (run / "run.json").write_text("{}")
    args = [f"input={image_shards}", f"output={tmp_path / 'tok'}", "device=cpu"]
    assert main(["encode", f"dvae_weights={run}", *args]) == 0
    capsys.readouterr()
    (run / "dvae.safetensors").unlink()
    fails(capsys, ["encode", f"dvae_weights={run}", *args],
          f"dvae_weights={run}: a run directory without its weights {run / 'dvae.safetensors'}")


def test_the_triton_backend_without_a_gpu_or_its_interpreter_is_refused(capsys, monkeypatch, token_shards):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    shards, tok = token_shards
    fails(capsys, ["train", *TINY, f"data.shards={shards}", f"data.tokenizer={tok}", "model.attention_backend=triton"],
          "model.attention_backend=triton: this machine has no CUDA GPU")


def test_token_shards_that_record_no_grid_are_checked_by_their_first_sample(capsys, token_shards, tmp_path):
    """Token shards written elsewhere (no encode meta) with another grid failed only inside the model."""
    import shutil

    from megadalle.data.index import ShardIndex

    shards, tok = token_shards
    bare = tmp_path / "bare"
    shutil.copytree(shards, bare)
    index = ShardIndex.load(bare)
    index.meta.clear()
    index.save()
    fails(capsys, ["train", *TINY, f"data.shards={bare}", f"data.tokenizer={tok}", "model.grid_size=4"],
          f"model.grid_size=4: the token shards {bare} hold 8x8 code grids")


def test_a_tar_copied_into_encodes_output_is_refused_not_left_out(capsys, token_shards, tmp_path):
    """A shard dropped in beside encode's was never read, and nothing said so. It has no record of encode's, so a
    rerun of encode refuses the folder: the advice is to move it out, not that rerun."""
    import shutil

    shards, tok = token_shards
    grown = tmp_path / "grown"
    shutil.copytree(shards, grown)
    last = sorted(grown.glob("*.tar"))[-1]
    shutil.copy(last, grown / "shard-000099.tar")
    err = fails(capsys, ["train", *TINY, f"data.shards={grown}", f"data.tokenizer={tok}"],
                f"{grown}: its tars are not those its index.json lists (new: shard-000099.tar)")
    assert err.endswith("; move shard-000099.tar out of it (encode did not write it): the shards it lists are there "
                        "as encode wrote them\n")


@pytest.mark.parametrize("argv", [["plan", "model=tiny"], ["generate", "weights=nowhere", "prompt=a cat"],
                                  ["train-dvae", "data.shards=nowhere"]])
def test_out_dir_null_is_refused_before_a_folder_called_none_is_made(capsys, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    fails(capsys, [*argv, "out_dir=null"], "out_dir=null: the folder runs and outputs go under cannot be null")
    assert not (tmp_path / "None").exists()


def test_wandb_online_without_credentials_is_refused_before_the_engine_starts(capsys, token_shards, tmp_path,
                                                                              monkeypatch):
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    shards, tok = token_shards
    fails(capsys, ["train", *TINY, f"data.shards={shards}", f"data.tokenizer={tok}", "logger=wandb",
                   "logger.mode=online", f"out_dir={tmp_path}"],
          "logger.mode=online: wandb finds no credentials here (WANDB_API_KEY, or the ~/.netrc entry `wandb login` "
          "writes); run `wandb login`, or log with logger.mode=offline")
    from megadalle.train.wandb_log import credentials_found

    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password k3y\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert credentials_found()
    assert not credentials_found({"HOME": str(tmp_path), "WANDB_BASE_URL": "https://wandb.example.org"})
    assert credentials_found({"WANDB_API_KEY": "k3y"})
    # `wandb login --host https://wandb.corp.example` saves the host in wandb's settings, the key under that host
    (tmp_path / ".config" / "wandb").mkdir(parents=True)
    (tmp_path / ".config" / "wandb" / "settings").write_text("[default]\nbase_url = https://wandb.corp.example\n")
    (tmp_path / ".netrc").write_text("machine wandb.corp.example\n  login user\n  password k3y\n")
    assert credentials_found({"HOME": str(tmp_path)})


def grid_run(token_shards, tmp_path):
    shards, tok = token_shards
    return ["train", *TINY, f"data.shards={shards}", f"data.tokenizer={tok}", f"run_dir={tmp_path / 'run'}",
            "trainer.steps=1", "trainer.media_every=1"]


def test_sample_grids_without_a_dvae_are_refused(capsys, token_shards, tmp_path):
    """`trainer.media_every` without `dvae_weights` drew no grid and said nothing."""
    fails(capsys, grid_run(token_shards, tmp_path),
          "megadalle train: trainer.media_every=1: the sample grids need the dVAE that decodes them; give "
          "dvae_weights=DVAE, or set trainer.media_every=0")
    assert not (tmp_path / "run").exists()


def test_the_grids_dvae_must_decode_the_model(capsys, token_shards, tmp_path):
    """A dVAE of a smaller codebook (or another grid) passed, then failed at the first grid (`codes outside
    [0,64)`), media_every updates into the run."""
    from megadalle.preflight import preflight

    base = grid_run(token_shards, tmp_path)
    small = dvae_weights(tmp_path / "dvae64codes.safetensors", 32)  # an 8x8 grid of 64 codes; the model draws 128
    fails(capsys, [*base, f"dvae_weights={small}"],
          f"megadalle train: dvae_weights={small}: cannot decode this model's sample grids: the Transformer draws "
          "codes from 0 to 127 (model.image_vocab=128), the dVAE decodes 64 codes")
    wide = dvae_weights(tmp_path / "dvae64px.safetensors", 64)
    fails(capsys, [*base, f"dvae_weights={wide}", "model.image_vocab=64"],
          f"dvae_weights={wide}: cannot decode this model's sample grids: the dVAE codes 64 px images as a 16x16 grid")
    fails(capsys, [*base, f"dvae_weights={tmp_path / 'nope.safetensors'}"],
          f"dvae_weights={tmp_path / 'nope.safetensors'}: no such path")
    assert not (tmp_path / "run").exists()
    fits = dvae_weights(tmp_path / "dvae.safetensors", 32, vocab_size=128)
    preflight("train", compose("train", [*base[1:], f"dvae_weights={fits}"]))


def test_the_grids_dvae_run_directory_is_read_as_encode_reads_it(capsys, token_shards, tmp_path):
    """A train-dvae run directory was checked (and decoded) as its newest checkpoint, not the file it exported and the
    shards were encoded with; an export the run trained past passed."""
    import json

    from megadalle.preflight import preflight
    from megadalle.train.dvae import FACTORY
    from megadalle.train.dvae_export import record_export

    base, run = grid_run(token_shards, tmp_path), tmp_path / "dvae-run"
    dvae_weights(run / "dvae.safetensors", 32, vocab_size=128)
    (run / "run.json").write_text(json.dumps({"task_factory": FACTORY, "config": {}}))
    preflight("train", compose("train", [*base[1:], f"dvae_weights={run}"]))
    record_export(run, 1)
    (run / "checkpoints" / "step_00000002").mkdir(parents=True)
    (run / "checkpoints" / "step_00000002" / "manifest.json").write_text(json.dumps({"files": {}}))
    fails(capsys, [*base, f"dvae_weights={run}"], f"megadalle train: dvae_weights={run}: {run / 'dvae.safetensors'} "
                                                  "holds the weights of step 1, and the run has trained to step 2")


def test_grid_captions_fall_back_to_data_shards_and_none_anywhere_is_refused(capsys, token_shards, tmp_path):
    """A validation split of uncaptioned samples crashed the run at its first grid (torch.cat of no images): the
    grids take data.shards' captions, and say so; with none there either, nothing to draw is refused."""
    from megadalle.preflight import preflight

    shards = token_shards[0]
    base, blank = grid_run(token_shards, tmp_path), few_tokens(tmp_path / "blank", 4, caption=" \n")
    weights = dvae_weights(tmp_path / "dvae.safetensors", 32, vocab_size=128)
    preflight("train", compose("train", [*base[1:], f"dvae_weights={weights}", f"data.val_shards={blank}"]))
    assert capsys.readouterr().err == (f"[train] the sample grids draw the captions of data.shards={shards}: no "
                                       f"sample of data.val_shards={blank} has one\n")  # said once all checks pass
    uncaptioned = [f"data.shards={blank}" if o == f"data.shards={shards}" else o for o in base]
    fails(capsys, [*uncaptioned, f"dvae_weights={weights}"],
          f"megadalle train: dvae_weights={weights}: the sample grids have no caption to draw: no sample of "
          f"data.shards={blank} has one (a non-blank line in its txt); give captioned shards, or set "
          "trainer.media_every=0")


def test_a_dvae_without_media_every_says_that_it_draws_no_grid(capsys, token_shards, tmp_path):
    """media_every is 0 by default: `train dvae_weights=...` alone drew nothing and said nothing."""
    from megadalle.preflight import preflight

    weights = dvae_weights(tmp_path / "dvae.safetensors", 32, vocab_size=128)
    quiet = [o for o in grid_run(token_shards, tmp_path)[1:] if o != "trainer.media_every=1"]
    preflight("train", compose("train", [*quiet, f"dvae_weights={weights}"]))
    assert capsys.readouterr().err == (f"[train] dvae_weights={weights} draws no sample grid with "
                                       "trainer.media_every=0 (trainer.media_every=N draws one every N updates); the "
                                       "run records it for export and generate\n")


def training(verb, token_shards, image_shards, *overrides):
    """A one-update run of a training verb on the tiny data: on the code before these checks it trained (one
    update, not the whole run) and failed, or went on, after that."""
    shards, tok = token_shards
    data = {"train": [*TINY, f"data.shards={shards}", f"data.tokenizer={tok}"],
            "train-dvae": ["dvae=tiny", "trainer=tiny", "logger=none", f"data.shards={image_shards}"],
            "train-clip": ["clip=tiny", "trainer=tiny", "logger=none", f"data.shards={image_shards}",
                           f"tokenizer={tok}"]}
    return [verb, *data[verb], "trainer.steps=1", *overrides]


@pytest.mark.parametrize("verb, file", [("train-dvae", "dvae.safetensors"), ("train-clip", "clip.safetensors")])
def test_weights_that_cannot_be_written_are_refused_before_training(capsys, token_shards, image_shards, tmp_path, verb,
                                                                    file):
    """The export after the whole training was the first to look at `weights`: a FileNotFoundError traceback, or
    a refusal naming `output=`, once every update had run."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a folder")
    run = [f"out_dir={tmp_path / 'runs'}"]
    fails(capsys, training(verb, token_shards, image_shards, *run, f"weights=/proc/nope/{file}"),
          f"megadalle {verb}: weights=/proc/nope/{file}: nothing can be made in /proc (")
    fails(capsys, training(verb, token_shards, image_shards, *run, f"weights={notes / file}"),
          f"weights={notes / file}: {notes} is a file, not a folder")
    if verb == "train-clip":  # a folder of shards for CLIP's export; train-dvae's weights end in .safetensors
        fails(capsys, training(verb, token_shards, image_shards, *run, f"weights={image_shards}"),
              f"weights={image_shards}: exists and is neither empty nor an exported weights folder")
    assert not (tmp_path / "runs").exists()


def test_an_output_where_nothing_can_be_made_is_refused_before_the_work(capsys, image_shards):
    """`writable` looked only for files in the way: `tokenizer` trained on every caption, then could not save."""
    fails(capsys, ["tokenizer", f"input={image_shards}", "output=/proc/nope/tok.model"],
          "megadalle tokenizer: output=/proc/nope/tok.model: nothing can be made in /proc (")


def test_train_clip_weights_are_text(token_shards, image_shards):
    """`weights=2024` stayed an int, which the export after the training refused with a TypeError."""
    from megadalle.preflight import preflight

    cfg = compose("train-clip", training("train-clip", token_shards, image_shards, "weights=2024")[1:])
    assert cfg.weights == "2024"
    preflight("train-clip", cfg)


@pytest.mark.parametrize("verb, task", [("train", "transformer"), ("train-dvae", "dvae"), ("train-clip", "clip")])
def test_a_run_directory_that_cannot_be_made_is_refused_before_training(capsys, token_shards, image_shards, tmp_path,
                                                                        verb, task):
    """Rank 0 makes the run directory once DeepSpeed has started: a file in its place or in its path, or a place
    where nothing can be made, was a FileExistsError, NotADirectoryError or FileNotFoundError traceback."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a folder")
    fails(capsys, training(verb, token_shards, image_shards, f"run_dir={notes}"),
          f"run_dir={notes}: a file; give a folder")
    fails(capsys, training(verb, token_shards, image_shards, "run_dir=/proc/run"),
          "run_dir=/proc/run: nothing can be made in /proc (")
    fails(capsys, training(verb, token_shards, image_shards, f"out_dir={notes}"),
          f"out_dir={notes} (the run directory {notes}/{task}/default): {notes} is a file, not a folder")
    fails(capsys, training(verb, token_shards, image_shards, f"out_dir={notes}", "name=exp1"),
          f"out_dir={notes} (the run directory {notes}/{task}/exp1): {notes} is a file, not a folder")


@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", "."])
def test_a_run_name_is_one_folder(capsys, token_shards, image_shards, tmp_path, name):
    """`name=../../escape` put the run outside out_dir, `name=a/b` nested it under another run's name."""
    out = tmp_path / "deep" / "out"
    fails(capsys, training("train-dvae", token_shards, image_shards, f"out_dir={out}", f"name={name}"),
          f"megadalle train-dvae: name={name}: a run's name is one folder under {out}/dvae (no `/`, not `.` or `..`)")
    assert not (tmp_path / "deep").exists()


@pytest.mark.parametrize("override, expected", [
    ("media_captions=abc", "media_captions: Value 'abc' of type 'str' could not be converted to Integer"),
    ("media_samples=1.5", "media_samples: Value '1.5' of type 'float' could not be converted to Integer"),
    ("media_samples=0", "media_samples=0: must be positive"),
])
def test_the_sample_grids_keys_are_typed(capsys, token_shards, image_shards, tmp_path, override, expected):
    """No schema declared them: `media_captions=abc` was a ValueError traceback, `media_samples=1.5` silently 1."""
    fails(capsys, training("train", token_shards, image_shards, f"run_dir={tmp_path / 'run'}", override),
          f"megadalle train: {expected}")
    assert not (tmp_path / "run").exists()


def test_a_pipeline_deeper_than_the_model_is_refused_before_training(capsys, monkeypatch, tmp_path):
    """DeepSpeed cut 8 stages of the tiny model's 4 blocks and trained with ranks holding none: plan refused it,
    training built it in silence. The same check (plan/layout.check_stages_filled) names the ranks launched."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "8")
    fails(capsys, ["train", *TINY, "data=synthetic", "deepspeed=pipe", "deepspeed.pipeline_stages=8"],
          "deepspeed.pipeline_stages=8: partition_method=type:Block leaves stages 0, 5, 6, 7 with no Transformer block "
          "(model.n_layers=4); at most 4 stages fill it and divide the 8 ranks launched: set "
          "deepspeed.pipeline_stages=4")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("argv", [["train", *TINY, "data=synthetic"],
                                  ["train-dvae", "dvae=tiny", "trainer=tiny", "logger=none"],
                                  ["train-clip", "clip=tiny", "trainer=tiny", "logger=none", "tokenizer=t"]],
                         ids=["train", "train-dvae", "train-clip"])
def test_a_seed_that_is_no_number_is_refused_before_training(capsys, monkeypatch, tmp_path, argv):
    """`seed=abc` was an int() traceback inside the stage (train, train-clip) once the checks had passed."""
    monkeypatch.chdir(tmp_path)
    fails(capsys, [*argv, "data.shards=x", "seed=abc"] if argv[0] != "train" else [*argv, "seed=abc"],
          "seed: Value 'abc'")


def test_a_sweep_over_names_gives_run_directories_named_by_the_numbers():
    """hydra reads `-m name=1,2` as ints: building the run directory's path was a TypeError."""
    from megadalle.train.rundir import path_for

    assert path_for(None, "out", "transformer", 1) == path_for(None, "out", "transformer", "1")
    assert str(path_for(2024, "out", "transformer", None)) == "2024"


def test_an_ema_swapped_in_for_validation_is_refused_with_zero_hpz(capsys, token_shards):
    """ZeRO++'s secondary partitions would keep the live weights in the val/ metrics said to be the EMA's."""
    shards, tok = token_shards
    argv = ["train", *TINY, f"data.shards={shards}", f"data.tokenizer={tok}", "trainer.ema=0.9",
            "+deepspeed.extra.zero_optimization.zero_hpz_partition_size=2"]
    fails(capsys, [*argv, "trainer.eval_every=2"], "zero_hpz_partition_size=2: with trainer.ema=0.9")


def small_images(root, n: int, side: int):
    """`n` JPEG samples of `side` px with captions, as `prepare image_size=side` writes them."""
    import io

    import numpy as np
    from PIL import Image

    from megadalle.data.shards import ShardWriter

    rng = np.random.default_rng(2)
    with ShardWriter(root, meta={"image_size": side, "format": "jpg"}) as w:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, format="JPEG")
            w.write({"__key__": f"{i:06d}", "jpg": buf.getvalue(), "txt": "a red circle"})
    return root


@pytest.mark.parametrize("verb", ["train-dvae", "train-clip"])
def test_validation_shards_are_checked_like_the_training_shards(capsys, token_shards, image_shards, tmp_path, verb):
    """data.val_shards was first read at the first validation, eval_every updates into the run: token shards failed
    there with a traceback, images smaller than the model's input were upscaled in silence, and a folder of images
    got "not a finished shard directory" where data.shards gets the advice to prepare it."""
    from megadalle.preflight import preflight

    run = training(verb, token_shards, image_shards, "trainer.eval_every=1")
    fails(capsys, [*run, f"data.val_shards={token_shards[0]}"],
          f"megadalle {verb}: data.val_shards={token_shards[0]}: no image field among ['codes.npy', 'txt'] (token "
          "shards from `encode`; this verb reads image shards from `prepare`)")
    small = small_images(tmp_path / "val16", 8, 16)
    fails(capsys, [*run, f"data.val_shards={small}"],
          f"the images of data.val_shards={small} are 16 px, smaller than the model's input (give data.val_shards of "
          "the training's size, or prepare the shards at 32 px)")
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        (tmp_path / "imgs" / f"im{i}.png").write_bytes(b"")
    fails(capsys, [*run, f"data.val_shards={tmp_path / 'imgs'}"],
          f"data.val_shards={tmp_path / 'imgs'}: {tmp_path / 'imgs'}/index.json not found: {tmp_path / 'imgs'} holds "
          "images")
    fails(capsys, [*run, f"data.val_shards={tmp_path / 'nope'}"], f"data.val_shards={tmp_path / 'nope'}: no such")
    preflight(verb, compose(verb, [*run[1:], f"data.val_shards={small_images(tmp_path / 'val32', 8, 32)}"]))
    preflight(verb, compose(verb, [*run[1:], "trainer.eval_every=0", f"data.val_shards={token_shards[0]}"]))


@pytest.mark.parametrize("verb", ["train", "train-dvae", "train-clip"])
def test_validation_on_the_training_folder_is_refused(capsys, token_shards, image_shards, tmp_path, verb):
    """data.val_shards=data.shards validated on the samples the run trains on: val/loss logged, exit code 0. The same
    folder through a link or another spelling of its path is the same training set."""
    shards = token_shards[0] if verb == "train" else image_shards
    run = training(verb, token_shards, image_shards, "trainer.eval_every=1")
    (tmp_path / "link").symlink_to(shards)
    for given in (shards, f"{shards}/", tmp_path / "link"):
        fails(capsys, [*run, f"data.val_shards={given}"],
              f"megadalle {verb}: data.val_shards={given} is the folder of data.shards={shards}: validation would "
              "score the samples the run trains on; give held-out shards (prepare's <shards>/val, read by default "
              "with data.val_shards=null)")


def test_tars_from_elsewhere_serve_as_validation_shards(tmp_path, token_shards, image_shards):
    """The data config refused a val_shards folder without index.json, which data.shards indexes on first use."""
    from megadalle.preflight import preflight

    root = wds_tars(tmp_path / "wds")
    preflight("train-dvae", compose("train-dvae", [*training("train-dvae", token_shards, image_shards)[1:],
                                                   "trainer.eval_every=1", f"data.val_shards={root}"]))
    assert (root / "index.json").is_file()


def test_token_validation_shards_must_fit_the_transformer(capsys, token_shards, image_shards, tmp_path):
    import shutil

    from megadalle.data.index import ShardIndex

    run = training("train", token_shards, image_shards, "trainer.eval_every=1")
    fails(capsys, [*run, f"data.val_shards={image_shards}"], f"data.val_shards={image_shards}: no codes.npy field")
    other = tmp_path / "other"
    shutil.copytree(token_shards[0], other)
    index = ShardIndex.load(other)
    index.meta.update(vocab_size=64)
    index.save()
    fails(capsys, [*run, f"data.val_shards={other}"],
          f"model.image_vocab=128: the token shards data.val_shards={other} hold codes of a 64-entry codebook, and "
          "sampling needs the model's codes to be its dVAE's (give data.val_shards encoded by the dVAE of data.shards)")


def few_tokens(root, n: int, caption: str = "a red circle"):
    """`n` token samples of 8x8 codes of 128, as `encode` writes them."""
    import numpy as np

    from megadalle.data.shards import ShardWriter

    with ShardWriter(root, meta={"grid_size": 8, "vocab_size": 128, "image_size": 32}) as w:
        for i in range(n):
            w.write({"__key__": f"{i:06d}", "codes.npy": np.full((8, 8), i, dtype=np.uint16), "txt": caption})
    return root


@pytest.mark.parametrize("verb", ["train", "train-dvae", "train-clip"])
def test_a_validation_split_smaller_than_a_micro_batch_on_every_rank_is_refused(capsys, token_shards, image_shards,
                                                                               tmp_path, verb):
    """A one-image split repeated its image through each batch: CLIP logged val/loss ln 4, val/clip_acc 0.25."""
    from megadalle.preflight import preflight

    val = few_tokens(tmp_path / "val", 3) if verb == "train" else small_images(tmp_path / "val", 3, 32)
    run = training(verb, token_shards, image_shards, "trainer.eval_every=1", f"data.val_shards={val}",
                   "trainer.micro_batch=4")
    err = fails(capsys, run, f"megadalle {verb}: the validation split {val} holds 3 samples, fewer than one "
                             "micro-batch on every rank (trainer.micro_batch=4 x 1 data-parallel rank = 4): each "
                             "validation batch would score some samples twice")
    assert ("(and CLIP contrast fewer pairs than it holds)" in err) == (verb == "train-clip")
    preflight(verb, compose(verb, [*run[1:], "trainer.micro_batch=3"]))
    preflight(verb, compose(verb, [*run[1:], "trainer.eval_every=0"]))


@pytest.mark.parametrize("overrides, expected", [
    (["trainer.micro_batch=1"], "trainer.micro_batch=1 x 1 data-parallel rank = 1 pair per contrastive loss "
                                "(clip.negatives=update): with no other caption to tell its image from, CLIP learns "
                                "nothing (loss 0); raise trainer.micro_batch or trainer.grad_accum"),
    (["trainer.micro_batch=1", "trainer.grad_accum=4", "clip.negatives=micro_batch"],
     "= 1 pair per contrastive loss (clip.negatives=micro_batch): with no other caption to tell its image from, CLIP "
     "learns nothing (loss 0); raise trainer.micro_batch or set clip.negatives=update"),
])
def test_clip_refuses_a_contrastive_loss_of_one_pair(capsys, token_shards, image_shards, tmp_path, overrides,
                                                    expected):
    """One pair has no negative: train-clip ran with loss 0.0, clip_acc 1.0 and grad_norm 0 at every update."""
    val = small_images(tmp_path / "val", 8, 32)
    fails(capsys, training("train-clip", token_shards, image_shards, f"data.val_shards={val}", *overrides), expected)


def test_clip_validates_the_updates_pairs_with_one_pair_a_micro_batch(token_shards, image_shards, tmp_path):
    """Validation contrasts each validation global batch's micro-batches together under clip.negatives=update: one
    pair a micro-batch was refused as a val/loss of 0 it no longer is."""
    from megadalle.preflight import preflight

    val = small_images(tmp_path / "val", 8, 32)
    preflight("train-clip", compose("train-clip", training(
        "train-clip", token_shards, image_shards, f"data.val_shards={val}", "trainer.micro_batch=1",
        "trainer.grad_accum=4", "trainer.eval_every=10")[1:]))


def test_clip_refuses_a_validation_split_read_as_one_pair(capsys, token_shards, image_shards, tmp_path):
    """A split of one sample is read in one micro-batch of one pair, whatever the training contrasts."""
    val = small_images(tmp_path / "val", 1, 32)
    fails(capsys, training("train-clip", token_shards, image_shards, f"data.val_shards={val}", "trainer.micro_batch=1",
                           "trainer.grad_accum=4", "trainer.eval_every=10"),
          f"trainer.eval_every=10: the validation split {val} holds 1 sample, read as 1 pair per validation loss: its "
          "val/loss would be 0 whatever the weights; give data.val_shards of at least 2 samples or set "
          "trainer.eval_every=0")


@pytest.mark.parametrize("verb", ["train", "train-dvae", "train-clip"])
def test_a_one_sample_split_advises_a_lower_micro_batch_only_where_it_can_succeed(capsys, token_shards, image_shards,
                                                                                 tmp_path, verb):
    """Under train-clip, trainer.micro_batch=1 then met the refusal of a split read as one pair (above)."""
    val = few_tokens(tmp_path / "val", 1) if verb == "train" else small_images(tmp_path / "val", 1, 32)
    err = fails(capsys, training(verb, token_shards, image_shards, "trainer.eval_every=1", f"data.val_shards={val}",
                                 "trainer.micro_batch=2"), f"the validation split {val} holds 1 sample, fewer than one")
    assert ("lower trainer.micro_batch" in err) == (verb != "train-clip"), err


def test_clip_contrasts_the_updates_pairs_with_one_pair_a_micro_batch(token_shards, image_shards):
    from megadalle.preflight import preflight

    preflight("train-clip", compose("train-clip", training("train-clip", token_shards, image_shards,
                                                           "trainer.micro_batch=1", "trainer.grad_accum=4")[1:]))


def test_a_bad_data_value_over_an_existing_run_is_refused_as_itself(capsys, token_shards, tmp_path):
    """`data.*` was checked only as the run started, after the run directory's comparison: `data.bpe_dropout=1`
    was "a run with another config" there, and refused as itself only in a new run."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"config": {"data": {"bpe_dropout": 0.1}}}))
    shards, tok = token_shards
    fails(capsys, ["train", "model=tiny", "trainer=tiny", "logger=none", f"data.shards={shards}",
                   f"data.tokenizer={tok}", f"run_dir={run}", "data.bpe_dropout=1"],
          "megadalle train: data.bpe_dropout=1.0: must be in [0, 1)")


def test_a_dvae_deeper_than_its_image_is_refused_before_any_power_is_taken():
    """2**(n_groups-1) of n_groups=100000 was a traceback (an int too long to print), of 2**40 a hang."""
    from megadalle.config import ConfigError, build
    from megadalle.config.dvae import DVAEConfig

    with pytest.raises(ConfigError, match=r"^dvae.n_groups=100000: must be at most 6 for dvae.image_size=32: the "
                                          r"code grid is image_size / 2\*\*\(n_groups-1\)$"):
        build(DVAEConfig, {"image_size": 32, "n_groups": 100_000}, "dvae")
    assert build(DVAEConfig, {"image_size": 32, "n_groups": 6, "n_hid": 4}, "dvae").grid_size == 1


@pytest.mark.parametrize("argv", [["generate", "weights=model", "prompt=x", "output="],
                                  ["generate", "weights=model", "prompt=x", "out_dir="],
                                  ["train", "data=synthetic", "model=tiny", "trainer=tiny", "out_dir="],
                                  ["prepare", "input=images", "output="]])
def test_an_empty_path_is_refused_not_read_as_the_current_folder(argv, capsys, tmp_path, monkeypatch):
    """generate, evaluate and train wrote into the folder the command ran in (`out_dir=`: generate's under /)."""
    monkeypatch.chdir(tmp_path)
    key, _, value = argv[-1].partition("=")
    fails(capsys, argv, f"{key}={value!r}: an empty path, which would be the folder the command runs in; give a path")
    assert list(tmp_path.iterdir()) == []


def test_a_run_directory_of_another_verb_or_of_data_is_named_as_such(capsys, image_shards, tmp_path):
    """Another verb's run listed its ~40 keys as "another config" to rerun with; the shards trained on, or a folder of
    photos, took the run's checkpoints and export among them."""
    from megadalle.train.transformer import FACTORY

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"task_factory": FACTORY, "config": {}}))
    base = ["train-dvae", "dvae=tiny", "trainer=tiny", "logger=none", f"data.shards={image_shards}"]
    fails(capsys, [*base, f"run_dir={run}"], f"run_dir={run}: holds a `megadalle train` run, not a `megadalle "
                                             "train-dvae` one; give another run_dir, or name=")
    fails(capsys, [*base, f"run_dir={image_shards}"], f"run_dir={image_shards}: a folder of data (index.json, ...), "
                                                      "not a run directory; give a new or empty folder")
    assert not (image_shards / "checkpoints").exists()


def test_index_names_a_missing_dir_and_encode_a_device_it_cannot_use(capsys, tmp_path, image_shards):
    """`index dir=nowhere` said "nowhere: no *.tar shards to index", naming no key; `encode device=cudax` passed its
    check (startswith cuda) to torch's list of 30 device names."""
    from megadalle.config import ConfigError, build
    from megadalle.config.dvae import EncodeConfig

    fails(capsys, ["index", f"dir={tmp_path / 'nowhere'}"], f"dir={tmp_path / 'nowhere'}: no such directory")
    encode = {"dvae_weights": "d.safetensors", "input": str(image_shards), "output": str(tmp_path / "tok")}
    with pytest.raises(ConfigError, match=r"^device='cudax': expected auto, cpu, cuda or cuda:N$"):
        build(EncodeConfig, {**encode, "device": "cudax"}, "")
    assert build(EncodeConfig, {**encode, "device": "cuda:1"}, "").device == "cuda:1"


def test_data_keys_that_nothing_reads_are_said_once(capsys, image_shards):
    """train-dvae and train-clip took data.bpe_dropout, and any run a shuffle_window without shuffling, in silence."""
    from megadalle.preflight import preflight

    preflight("train-dvae", compose("train-dvae", ["dvae=tiny", "trainer=tiny", "logger=none", "trainer.steps=40",
                                                   f"data.shards={image_shards}", "data.bpe_dropout=0.5",
                                                   "data.shuffle=false", "data.shuffle_window=5",
                                                   "dvae.objective.tau_anneal_steps=40",
                                                   "dvae.objective.kl_warmup_steps=20"]))
    assert capsys.readouterr().err == (
        "[megadalle] warning: data.bpe_dropout=0.5 does nothing here: only `train` on token shards tokenizes captions "
        "with BPE dropout\n[megadalle] warning: data.shuffle_window=5 does nothing with data.shuffle=false\n")


def bare_shards(folder):
    """Four 32 px JPEGs without captions in one tar, indexed with `require=[]` (image-only tars from elsewhere)."""
    import io
    import tarfile

    from PIL import Image

    folder.mkdir()
    with tarfile.open(folder / "00000.tar", "w") as tar:
        for i in range(4):
            buf = io.BytesIO()
            Image.new("RGB", (32, 32), (60 * i, 0, 0)).save(buf, "JPEG")
            info = tarfile.TarInfo(f"im{i}.jpg")
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
    assert main(["index", f"dir={folder}", "require=[]", "num_workers=0"]) == 0
    return folder


@pytest.mark.parametrize("verb", ["train-clip", "encode", "tokenizer"])
def test_image_shards_without_captions_are_refused_before_any_work(capsys, token_shards, image_shards, tmp_path, verb):
    """Tars indexed with `require=[]` (image-only) were a KeyError traceback in tokenizer and encode: every reader of
    image shards but the dVAE's takes each image with its caption."""
    bare = bare_shards(tmp_path / "bare")
    capsys.readouterr()
    from tests.tiny_models import dvae_config, save_dvae

    dvae = save_dvae(tmp_path / "dvae.safetensors", dvae_config())
    argv = {"encode": ["encode", f"input={bare}", f"output={tmp_path / 'tokens'}", f"dvae_weights={dvae}"],
            "tokenizer": ["tokenizer", f"input={bare}", f"output={tmp_path / 'tok.model'}"]}.get(verb)
    key = "input" if argv else "data.shards"
    argv = argv or [*training(verb, token_shards, image_shards), f"data.shards={bare}"]
    fails(capsys, argv, f"{key}={bare}: its samples have no txt caption (fields ['jpg']: indexed with require=[]?)")


def test_train_dvae_learns_from_image_shards_without_captions(capsys, tmp_path):
    """The dVAE learns from pixels alone: image-only tars were refused (and before that a KeyError after start-up),
    training and validation split alike."""
    bare = bare_shards(tmp_path / "bare")
    val = bare_shards(tmp_path / "val")
    assert main(["train-dvae", f"data.shards={bare}", f"data.val_shards={val}", "data.num_workers=0", "dvae=tiny",
                 "dvae.n_hid=16", "trainer=tiny", "trainer.steps=2", "trainer.micro_batch=2", "trainer.eval_every=1",
                 "trainer.eval_batches=1", "logger=none", f"run_dir={tmp_path / 'run'}"]) == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 1] and all("val/loss" in row for row in rows)
    assert (tmp_path / "run" / "dvae.safetensors").is_file()
