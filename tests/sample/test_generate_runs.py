"""`megadalle generate` as a run: what scores.json records, memory bounded by batch_size, and what a rerun into
the same folder may replace."""
import json

import pytest

from megadalle.cli import main
from megadalle.config.compose import compose
from megadalle.sample import run
from tests.rerun_refusal import refused_then_overwritten
from tests.tiny_models import write_tiny_models


@pytest.fixture
def models(tmp_path):
    write_tiny_models(tmp_path)
    return tmp_path


def args(models, *more):
    return [f"weights={models / 'model.safetensors'}", "prompt=a red circle", *more]


def test_the_kept_samples_are_decoded_batch_size_at_a_time(models, tmp_path, monkeypatch):
    """keep=n decoded all kept codes in one dVAE call (512 images at 256 px: ~175 GB of activations)."""
    from megadalle.models.dvae import DVAE

    sizes, real = [], DVAE.decode_codes
    monkeypatch.setattr(DVAE, "decode_codes", lambda self, codes: sizes.append(len(codes)) or real(self, codes))
    for rerank in ("true", "false"):
        sizes.clear()
        assert run(compose("generate", args(models, "n=7", "keep=7", "batch_size=3", f"rerank={rerank}",
                                            f"output={tmp_path / rerank}"))) == 0
        assert max(sizes) <= 3 and sum(sizes) == 7 * (rerank == "true") + 7, sizes


def test_scores_json_records_what_reproduces_the_samples(models, tmp_path):
    """Samples depend on (seed, n, batch_size): the same seed with another batch_size draws others, so the record
    names batch_size, and the device and files besides."""
    reports = []
    for batch_size in (2, 3):
        out = tmp_path / str(batch_size)
        assert run(compose("generate", args(models, "n=4", "keep=4", f"batch_size={batch_size}", "seed=5",
                                            f"output={out}"))) == 0
        reports.append(json.loads((out / "scores.json").read_text()))
    for report, batch_size in zip(reports, (2, 3)):
        assert (report["n"], report["keep"], report["batch_size"], report["seed"]) == (4, 4, batch_size, 5)
        assert report["device"] == "cpu" and report["config"]["batch_size"] == batch_size
        assert report["config"]["weights"] == str(models / "model.safetensors")
    assert reports[0]["all_scores"] != reports[1]["all_scores"]  # why batch_size is part of the record


def test_a_rerun_removes_only_the_samples_the_earlier_run_listed(models, tmp_path):
    """Every file matching sample_[0-9]*.png went, the user's sample_2019_holiday.png among them; now only the
    files an earlier generate's scores.json lists do, and nothing at all where no scores.json says what is whose."""
    out = tmp_path / "out"
    out.mkdir()
    foreign = ["sample_7.png", "sample_2019_x.png", "sample_05.png", "notes.txt"]
    for name in foreign:
        (out / name).write_text("the user's")
    base = args(models, "n=6", "batch_size=6", f"output={out}")
    assert main(["generate", *base, "keep=4"]) == 0  # no scores.json yet: sample_05.png is not generate's
    assert all((out / name).read_text() == "the user's" for name in foreign)
    (out / "sample_05.png").unlink()
    assert main(["generate", *base, "keep=1", "overwrite=true"]) == 0
    kept = json.loads((out / "scores.json").read_text())["kept"]
    assert sorted(p.name for p in out.iterdir()) == sorted([".lock", "grid.png", "scores.json", "sample_00.png",
                                                            "sample_7.png", "sample_2019_x.png", "notes.txt"])
    assert [k["file"] for k in kept] == ["sample_00.png"]


def test_a_rerun_into_an_earlier_runs_folder_is_refused_unless_overwrite(models, tmp_path, capsys, monkeypatch):
    """A plain rerun replaced the results in the default folder (<out_dir>/generate) without a word; now it is
    one line and exit code 2 before any model is read, and overwrite=true replaces them."""
    base = ["generate", *args(models, "n=2", "keep=1", f"out_dir={tmp_path}")]
    assert refused_then_overwritten(base, "seed=1", "seed=0 there, 1 here", tmp_path / "generate", "scores.json",
                                    monkeypatch, capsys)["seed"] == 1


def test_a_prompt_the_tokenizer_reads_nothing_of_is_refused_before_any_model_is_read(models, tmp_path, capsys,
                                                                                     monkeypatch):
    """U+200B and U+FEFF survive str.strip() and sentencepiece drops them: such a prompt passed the blank check and
    was sampled from pads alone."""
    import megadalle.bundle
    from megadalle.data.tokenizer import Tokenizer
    from megadalle.sample import generate
    from megadalle.sampling.load import load_model
    from megadalle.sampling.loop import SamplingSettings

    prompt = "\u200b\ufeff"
    monkeypatch.setattr(megadalle.bundle, "read_model", lambda *a, **k: pytest.fail("a model was read"))
    assert main(["generate", f"weights={models / 'model.safetensors'}", f'prompt="{prompt}"',
                 f"output={tmp_path / 'out'}"]) == 2
    assert capsys.readouterr().err == "megadalle generate: prompt='\\u200b\\ufeff': the tokenizer reads nothing of " \
                                      "it (it drops '\\u200b' U+200B, '\\ufeff' U+FEFF); give words\n"
    monkeypatch.undo()
    model = load_model(models / "model.safetensors", "transformer")
    dvae = load_model(models / "dvae.safetensors", "dvae")
    with pytest.raises(ValueError, match="the tokenizer reads nothing of it"):
        generate(model, dvae, None, Tokenizer(models / "tokenizer.model"), prompt, 1, 1, 1, SamplingSettings(), 0,
                 progress=False)


def test_a_prompt_mostly_unknown_to_the_tokenizer_is_said_once_with_its_characters(models, tmp_path, capsys):
    assert run(compose("generate", args(models, "n=1", f"output={tmp_path / 'known'}"))) == 0
    assert "unknown" not in capsys.readouterr().err
    prompt = "ÄÖÜ Äa"
    assert run(compose("generate", [f"weights={models / 'model.safetensors'}", f'prompt="{prompt}"', "n=2",
                                    "batch_size=1", f"output={tmp_path / 'out'}"])) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "unknown" in line]
    assert warnings == ["[generate] prompt 'ÄÖÜ Äa': 4 of 5 characters are unknown to the tokenizer, read as its "
                        "unknown piece: 'Ä' U+00C4, 'Ö' U+00D6, 'Ü' U+00DC"]


def test_ctrl_c_is_one_line_exit_code_130_and_leaves_no_folder_it_made(models, tmp_path, capsys, monkeypatch):
    """A KeyboardInterrupt traceback on Ctrl-C, and the empty output folder the run had made; now as prepare: one
    line and 130. A folder that was there before stays; so does a folder the run made and wrote into."""
    import megadalle.sample

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(megadalle.sample, "generate", interrupt)
    made, there = tmp_path / "new" / "out", tmp_path / "there"
    there.mkdir()
    for output in (made, there):
        assert main(["generate", *args(models, "n=1"), f"output={output}"]) == 130
        assert capsys.readouterr().err == f"megadalle generate: interrupted; no scores.json of this run in {output}\n"
    assert not (tmp_path / "new").exists() and there.is_dir()
    monkeypatch.undo()
    assert main(["generate", f"weights={models / 'model.safetensors'}", 'prompt="\u200b"', f"output={made}"]) == 2
    assert not (tmp_path / "new").exists()  # nor does a refused prompt leave one


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "0"])
def test_a_temperature_that_is_not_positive_and_finite_is_refused_naming_it(models, tmp_path, capsys, value):
    """temperature=inf was accepted and sampled every image token alike: noise, with exit code 0."""
    assert main(["generate", *args(models, f"temperature={value}"), f"output={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"megadalle generate: temperature={float(value)!r}: must be positive and finite"), err
    assert not (tmp_path / "out").exists()
