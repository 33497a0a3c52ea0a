"""The command lines megadalle's messages advise run as printed: each written with config.override (`command_line`,
`override_word`), so that a path holding a space, a comma or an apostrophe comes back whole from the shell. They
were f-strings: pasted, `megadalle export run=/tmp/sp demo/runs/dalle ...` ended in "demo/runs/dalle: expected
key=value"."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

from megadalle.config.override import command_line
from megadalle.data.images import upscaled_message
from megadalle.data.index import ShardIndex, ShardsNotFound
from megadalle.data.ingest.folder import read_only
from megadalle.errors import BundleError
from megadalle.preflight.probes import PreflightError, shard_index
from megadalle.run_pieces import export_advice, instead_of_folder
from megadalle.sampling import clip_record
from megadalle.sampling.compatible import IncompatibleModels, TokenizerRecord, check_clip_tokenizer
from megadalle.sampling.files import sampling_files
from megadalle.train import apex_adam, consolidate
from megadalle.train.checkpoint_load import unreadable
from megadalle.train.clip import FACTORY as CLIP_FACTORY
from megadalle.train.consolidate import read_advice
from megadalle.weights import INDEX
from megadalle.weights.replace import folder_export

AWKWARD = "my data, 'v2'"
"""A folder name a user may well have: a space, a comma (hydra's sweep), an apostrophe (the shell's quote)."""


def pasted(message: str) -> list[str]:
    """The words of the first command the message advises (between backquotes), as the shell hands them over."""
    return shlex.split(re.search(r"`(megadalle [^`]*)`", message)[1])


def test_a_command_line_is_one_word_a_setting():
    assert shlex.split(command_line("export", run=f"/x/{AWKWARD}", output="DIR", weights_only=True)) == [
        "megadalle", "export", f"run=\"/x/{AWKWARD}\"", "output=DIR", "weights_only=true"]


def shards_without_index(root: Path) -> str:
    (root / "00000.tar").write_bytes(b"")
    with pytest.raises(ShardsNotFound) as refused:
        ShardIndex.load(root)
    return str(refused.value)


def images_not_shards(root: Path) -> str:
    (root / "cat.png").write_bytes(b"")
    with pytest.raises(ShardsNotFound) as refused:
        ShardIndex.load(root)
    return str(refused.value)


def clip_run(root: Path) -> Path:
    (root / "run.json").write_text(json.dumps({"task_factory": CLIP_FACTORY, "config": {}}))
    return root


def transformer_run(root: Path) -> Path:
    (root / "run.json").write_text(json.dumps({"config": {"data": {"tokenizer": str(root / "tok.model")}},
                                               "task_factory": "megadalle.train.transformer:task_from_config"}))
    return root


def model_folder(root: Path) -> Path:
    (root / "run").mkdir()
    transformer_run(root / "run")  # bundle.json's run is named where it is one
    for name in ("tokenizer.model", "dvae.safetensors", "clip.safetensors"):
        (root / name).write_bytes(b"")
    (root / "bundle.json").write_text(json.dumps({
        "transformer": "transformer", "tokenizer": "tokenizer.model", "dvae": "dvae.safetensors",
        "clip": "clip.safetensors", "clip_model": "megadalle", "sources": {"run": str(root / "run")}}))
    return root


def flat_masters(root: Path) -> str:
    return unreadable(KeyError(*apex_adam.FLAT_MASTERS_KEY_ERROR), root / "checkpoints" / "step_00000006", None)


SITES = {
    "index a folder of tars": (shards_without_index, lambda r: ["index", f"dir={r}"]),
    "prepare a folder of images": (images_not_shards, lambda r: ["prepare", f"input={r}", "output=SHARDS"]),
    "index a read-only folder": (lambda r: str(read_only(r, "no index.json")), lambda r: ["index", f"dir={r}"]),
    "index skipping thumbnails": (lambda r: upscaled_message(r, 2, 9, 32, "images", "a blurry target"),
                                  lambda r: ["index", f"dir={r}", "min_side=32"]),
    "export a piece's run": (lambda r: instead_of_folder(clip_run(r), "clip"),
                             lambda r: ["export", f"run={r}", "output=FILE.safetensors", "dtype=fp32"]),
    "export a checkpoint of a CLIP run": (lambda r: export_advice(clip_run(r), r / "checkpoints" / "step_1"),
                                          lambda r: ["export", f"run={r}", f"checkpoint={r / 'checkpoints/step_1'}",
                                                     "output=FILE.safetensors"]),
    "export another checkpoint of a Transformer run": (
        lambda r: read_advice(transformer_run(r)),
        lambda r: ["export", f"run={r}", "checkpoint=STEP", "output=DIR", f"tokenizer={r / 'tok.model'}",
                   "dvae_weights=DVAE"]),
    "export a model folder whole": (
        lambda r: folder_export(model_folder(r)),
        lambda r: ["export", f"run={r / 'run'}", f"output={r}", f"tokenizer={r / 'tokenizer.model'}",
                   f"dvae_weights={r / 'dvae.safetensors'}", f"clip_weights={r / 'clip.safetensors'}"]),
    "export a checkpoint of flat masters": (
        flat_masters,
        lambda r: ["export", f"run={r}", f"checkpoint={r / 'checkpoints/step_00000006'}", "output=DIR",
                   "weights_only=true", "dtype=fp32"]),
}


@pytest.mark.parametrize("site", SITES)
def test_an_advised_command_comes_back_whole_from_the_shell(tmp_path, site):
    message, words = SITES[site]
    root = tmp_path / AWKWARD
    root.mkdir()
    assert pasted(message(root)) == ["megadalle", *quoted(words(root))]


def quoted(words: list[str]) -> list[str]:
    """Each `key=value` as hydra reads back a value with a comma or an apostrophe: in double quotes."""
    return [re.sub(r"^(\w+)=(.*)$", lambda m: f'{m[1]}="{m[2]}"' if AWKWARD in m[2] else m[0], word)
            for word in words]


def test_a_key_to_pass_comes_back_whole(tmp_path):
    (tmp_path / AWKWARD).mkdir()
    run = clip_run(tmp_path / AWKWARD)
    (run / "clip.safetensors").write_bytes(b"")
    advice = instead_of_folder(run, "clip")
    assert shlex.split(advice.rsplit(": ", 1)[1]) == [f'clip_weights="{run / "clip.safetensors"}"']


def test_a_dvae_run_given_to_generate_is_advised_to_export_as_the_file_it_exported(tmp_path):
    """generate takes a train-dvae run as dvae_weights, export only a file: the advice passed the run on, and the
    export it advised was refused ("a directory, not a weights file")."""
    (tmp_path / AWKWARD / "dalle").mkdir(parents=True)
    run, dvae_run = transformer_run(tmp_path / AWKWARD / "dalle"), tmp_path / AWKWARD / "dvae"
    dvae_run.mkdir()
    (dvae_run / "run.json").write_text(json.dumps({"task_factory": "megadalle.train.dvae:task_from_config",
                                                   "config": {}}))
    advice = export_advice(run, "STEP", dvae_run)
    assert pasted(advice)[-1] == "dvae_weights=DVAE.safetensors"
    assert pasted(advice.split("(DVAE.safetensors: ", 1)[1]) == [
        "megadalle", "export", f'run="{dvae_run}"', "output=DVAE.safetensors", "dtype=fp32"]
    (dvae_run / "dvae.safetensors").write_bytes(b"")
    advice = export_advice(run, "STEP", dvae_run)
    assert pasted(advice)[-1] == f'dvae_weights="{dvae_run / "dvae.safetensors"}"' and "(" not in advice


def test_a_clip_given_to_a_folder_export_drops_the_folders_open_clip_model(tmp_path):
    """The megadalle CLIP exported for the folder was advised with the folder's clip_model=open_clip:ARCH kept, which
    reads it as an open_clip state dict."""
    folder = model_folder(tmp_path)
    manifest = json.loads((folder / "bundle.json").read_text())
    (folder / "bundle.json").write_text(json.dumps({**manifest, "clip_model": "open_clip:ViT-B-32"}))
    assert pasted(folder_export(folder))[-1] == "clip_model=open_clip:ViT-B-32"
    assert pasted(folder_export(folder, clip_weights="CLIP.safetensors"))[-1] == "clip_weights=CLIP.safetensors"


def one_shard(root: Path) -> str:
    (root / INDEX).write_text(json.dumps({"weight_map": {"w": "model-1.safetensors"}}))
    (root / "model-1.safetensors").write_bytes(b"")
    with pytest.raises(BundleError) as refused:
        sampling_files(root / "model-1.safetensors")
    return str(refused.value).rsplit("; pass ", 1)[1]


def a_file_as_shards(root: Path) -> str:
    (root / "00000.tar").write_bytes(b"")
    with pytest.raises(PreflightError) as refused:
        shard_index("shards", root / "00000.tar")
    return str(refused.value).rsplit("give its folder: ", 1)[1]


def another_tokenizers_clip(root: Path) -> str:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(clip_record, "recorded", lambda clip: TokenizerRecord("b" * 64, "old.model", "clip.json"))
        with pytest.raises(IncompatibleModels) as refused:
            check_clip_tokenizer(root / "clip.safetensors", root / "tok.model", "a" * 64)
    return str(refused.value).rsplit("train one with ", 1)[1]


def an_older_checkpoint_to_export(root: Path) -> str:
    task = SimpleNamespace(export_spec=lambda: SimpleNamespace(kind="transformer"))
    with pytest.MonkeyPatch.context() as patch:  # the refusal of a damaged checkpoint, and its way out
        patch.setattr(consolidate, "read_checkpoint", lambda run, given, read, instead: instead(root / "step_1"))
        advice = consolidate.export(root, root / "w.safetensors", trained=(task, {}))
    return advice.removeprefix("export ").removesuffix(" instead")


KEYS = {"one shard as weights": (one_shard, lambda r: f"weights={r}"),
        "a file as shards": (a_file_as_shards, lambda r: f"shards={r}"),
        "a CLIP of another tokenizer": (another_tokenizers_clip, lambda r: f"tokenizer={r / 'tok.model'}"),
        "an older checkpoint to export": (an_older_checkpoint_to_export, lambda r: f"checkpoint={r / 'step_1'}")}


@pytest.mark.parametrize("site", KEYS)
def test_an_advised_key_comes_back_whole_from_the_shell(tmp_path, site):
    """These were `key={path}`: with a space, two words, and hydra read an apostrophe as syntax."""
    advised, word = KEYS[site]
    root = tmp_path / AWKWARD
    root.mkdir()
    assert shlex.split(advised(root)) == quoted([word(root)])
