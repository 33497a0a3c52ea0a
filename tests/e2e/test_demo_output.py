"""Where `megadalle demo` writes: an output folder it may take (new, empty or an earlier demo's), refused in one line
otherwise before anything is written or removed, and any path, whatever hydra's grammar makes of its characters.
The stages are stand-ins here: what is checked is the folder, and the paths each stage's config is given."""
import types
from operator import attrgetter

import pytest

import megadalle.demo as demo
from megadalle.demo_verbs import path_override
from megadalle.cli import main
from megadalle.config import build
from megadalle.config.compose import compose
from megadalle.config.demo import DemoConfig
from megadalle.config.dvae import DVAEConfig
from megadalle.preflight.probes import PreflightError


def demo_line(capsys, output) -> tuple[int, str]:
    """(exit status, last stderr line) of `megadalle demo demo=fast output=<output>` through the CLI."""
    code = main(["demo", "demo=fast", f"output={output}"])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err.rstrip("\n").rsplit("\n", 1)[-1]


@pytest.fixture
def no_stage(monkeypatch):
    """A demo that got past its checks fails the test at its first stage."""
    monkeypatch.setattr(demo, "make_data", lambda *args: pytest.fail("the demo started on an output it must refuse"))


def test_a_users_folder_is_refused_before_its_raw_folder_is_removed(tmp_path, capsys, no_stage):
    """`demo output=<a folder of the user's>` deleted its raw/ in silence (the demo draws raw/ anew)."""
    folder = tmp_path / "userdir"
    (folder / "raw").mkdir(parents=True)
    (folder / "raw" / "notes.txt").write_text("mine")
    code, line = demo_line(capsys, folder)
    assert (code, line) == (2, f"megadalle demo: output={folder}: a folder that holds no earlier demo (no made/ "
                               "record in it), whose raw/ and clip_images/ the demo would replace; give a new or "
                               "empty folder")
    with pytest.raises(PreflightError, match="holds no earlier demo"):  # a call without the CLI, the same check
        demo.run(compose("demo", ["demo=fast", f"output={folder}"]))
    assert sorted(p.name for p in folder.rglob("*")) == ["notes.txt", "raw"]


def test_an_empty_folder_and_an_earlier_demos_are_taken(tmp_path):
    from megadalle.preflight.demo import check_output

    (tmp_path / "empty").mkdir()
    (tmp_path / "earlier" / "made").mkdir(parents=True)
    (tmp_path / "earlier" / "raw").mkdir()
    for older in ("finished/demo.json", "stopped/runs/dvae/run.json"):  # demos from before made/ was written
        (tmp_path / older).parent.mkdir(parents=True)
        (tmp_path / older).write_text("{}")
        (tmp_path / older.split("/")[0] / "raw").mkdir()
    for output in ("empty", "earlier", "finished", "stopped", "new/sub"):
        check_output(tmp_path / output)


def test_an_output_that_is_a_file_or_under_one_is_one_line(tmp_path, capsys, no_stage):
    """A FileExistsError's traceback (a file), a NotADirectoryError's (a file above it)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert demo_line(capsys, afile) == (2, f"megadalle demo: output={afile}: a file; give a folder")
    assert demo_line(capsys, afile / "sub") == (2, f"megadalle demo: output={afile / 'sub'}: {afile} is a file, not "
                                                   "a folder")


def test_every_stage_gets_the_demos_paths_whatever_their_characters(tmp_path, monkeypatch):
    """An output with a comma, an `=`, brackets, an apostrophe or spaces: pasted bare into the stages' overrides, the
    comma was read as a sweep (after raw/ was drawn), the rest as syntax."""
    import megadalle.data.prepare as prepare_module
    import megadalle.data.tokenizer as tokenizer_module
    import megadalle.encode as encode_module
    import megadalle.export as export_module
    import megadalle.models.dvae as dvae_module
    import megadalle.train.clip as clip_module
    import megadalle.train.dvae as train_dvae_module
    import megadalle.train.loop as loop_module
    import megadalle.train.transformer as transformer_module

    out = tmp_path / "my demo, v2 (a=b) it's"
    paths = {}

    def noting(stage: str, *keys: str, result=None):
        """A stand-in for a stage's entry point: notes the paths its config is given."""
        return lambda cfg, *_: (paths.__setitem__(stage, [str(attrgetter(key)(cfg)) for key in keys]), result)[1]

    monkeypatch.setattr(demo, "write_dataset", lambda *args: None)
    monkeypatch.setattr(demo, "check_captions_fit", lambda *args: None)
    monkeypatch.setattr(prepare_module, "prepare", noting("prepare", "input", "output",
                                                          result=types.SimpleNamespace(text=lambda: "")))
    monkeypatch.setattr(tokenizer_module, "train_tokenizer", lambda *args: paths.__setitem__("tokenizer",
                                                                                             list(map(str, args[:2]))))
    monkeypatch.setattr(train_dvae_module, "train_dvae", noting("train-dvae", "data.shards", "weights", "run_dir",
                                                                result=tmp_path))
    monkeypatch.setattr(dvae_module, "load_dvae", lambda path: types.SimpleNamespace(cfg=DVAEConfig()))
    monkeypatch.setattr(encode_module, "encode_shards", lambda *args, **kwargs: None)
    monkeypatch.setattr(clip_module, "train_clip", noting("train-clip", "data.shards", "tokenizer", "weights",
                                                          "run_dir", result=tmp_path))
    monkeypatch.setattr(transformer_module, "task_from_config", lambda cfg: cfg)
    monkeypatch.setattr(loop_module, "train_from_config", noting("train", "data.shards", "data.tokenizer", "run_dir",
                        result=types.SimpleNamespace(run_dir=tmp_path, stopped_by_signal=False)))
    monkeypatch.setattr(export_module, "export", lambda *args, **kwargs: None)
    d = build(DemoConfig, compose("demo", ["demo=fast", "demo.clip_images=original"]).demo, "demo")
    shards, tokenizer = demo.make_data(d, out, seed=0)
    demo.train_models(d, out, shards, tokenizer, 64, demo.Timer(), seed=0)
    assert paths == {"prepare": [f"{out}/raw", f"{out}/shards"],
                     "tokenizer": [f"{out}/shards", f"{out}/tokenizer.model"],
                     "train-dvae": [f"{out}/shards", f"{out}/dvae.safetensors", f"{out}/runs/dvae"],
                     "train-clip": [f"{out}/shards", f"{out}/tokenizer.model", f"{out}/clip.safetensors",
                                    f"{out}/runs/clip"],
                     "train": [f"{out}/tokens", f"{out}/tokenizer.model", f"{out}/runs/dalle"]}


@pytest.mark.parametrize("path", ['/d/a,b', "/d/x\\y", '/d/q"z', "/d/t\\", "/d/${x}", '/d/w\\"v', "/d/[a]{b}"])
def test_a_path_override_reads_back_as_the_path(path):
    cfg = compose("tokenizer", [path_override("input", path), path_override("output", path + "/t")])
    assert (cfg.input, cfg.output) == (path, path + "/t")
