"""`megadalle generate` end to end on tiny random models: files written, kept samples sorted by CLIP score."""
import json
import re

import pytest
import torch

from megadalle.config import ConfigError, build, top_level
from megadalle.config.compose import compose
from megadalle.sample import generate, run
from tests.tiny_models import write_tiny_models


def test_generate_writes_a_grid_and_sorted_scores(tmp_path):
    write_tiny_models(tmp_path)
    out = tmp_path / "out"
    cfg = compose("generate", [f"weights={tmp_path / 'model.safetensors'}", "prompt=a red circle at the top left",
                               "n=7", "keep=3", "batch_size=3", "top_k=5", f"output={out}"])
    assert run(cfg) == 0
    assert (out / "grid.png").is_file() and len(list(out.glob("sample_*.png"))) == 3
    report = json.loads((out / "scores.json").read_text())
    kept = [k["score"] for k in report["kept"]]
    assert len(report["all_scores"]) == 7 and kept == sorted(report["all_scores"], reverse=True)[:3]
    again = tmp_path / "again"
    cfg = compose("generate", [f"weights={tmp_path / 'model.safetensors'}", "prompt=a red circle at the top left",
                               "n=7", "keep=3", "batch_size=3", "top_k=5", f"output={again}"])
    run(cfg)
    assert json.loads((again / "scores.json").read_text())["all_scores"] == report["all_scores"]


def test_generate_says_when_the_prompt_is_cut(tmp_path, capsys):
    """text_len is 8 here, the Transformer's and CLIP's: a prompt longer than that loses its end for both, which
    must not go unsaid, once per prompt however many batches CLIP scores."""
    write_tiny_models(tmp_path)
    prompt = "a red circle at the top left and a blue square at the bottom right"
    cfg = compose("generate", [f"weights={tmp_path / 'model.safetensors'}", f"prompt={prompt}", "n=4", "keep=1",
                               "batch_size=2", f"output={tmp_path / 'out'}"])
    assert run(cfg) == 0
    err = capsys.readouterr().err
    assert f"[generate] the prompt {prompt!r} is 38 tokens and the model reads 8: " in err
    assert err.count(f"[generate] the prompt {prompt!r} is 38 tokens and CLIP reads 8: ") == 1
    cfg = compose("generate", [f"weights={tmp_path / 'model.safetensors'}", f"prompt={prompt}", "n=1", "keep=1",
                               "rerank=false", f"output={tmp_path / 'plain'}"])
    assert run(cfg) == 0 and "CLIP reads" not in capsys.readouterr().err  # no CLIP, no CLIP to cut it
    run(compose("generate", [f"weights={tmp_path / 'model.safetensors'}", "prompt=a red circle", "n=1", "keep=1",
                             f"output={tmp_path / 'short'}"]))
    assert "is cut" not in capsys.readouterr().err


def test_keep_defaults_to_eight_or_every_sample_drawn_and_a_larger_keep_given_is_refused():
    """`generate n=4` without keep= must run (the default 8 is more than 4 samples); keep=5 with n=4 is refused."""
    from megadalle.config.sample import GenerateConfig

    def kept(*overrides):
        cfg = build(GenerateConfig, top_level(compose("generate", ["weights=model", "prompt=a cat", *overrides]),
                                              GenerateConfig), "")
        return cfg.kept

    assert (kept(), kept("n=4"), kept("n=4", "keep=2")) == (8, 4, 2)
    with pytest.raises(ConfigError, match=re.escape("keep=5: must be at most n=4, the samples drawn")):
        kept("n=4", "keep=5")


@pytest.mark.parametrize("change,message", [
    (dict(prompt=["a red circle", "a blue square"]), "prompt=['a red circle', 'a blue square']: expected one prompt"),
    (dict(prompt=""), "prompt='': must not be empty"), (dict(prompt="  "), "prompt='  ': must not be empty"),
    (dict(seed=None), "seed=None: expected an integer"), (dict(n=0), "n=0: must be positive"),
    (dict(keep=2.5), "keep=2.5: expected an integer"), (dict(keep=3), "keep=3: must be at most n=2, the samples drawn")])
def test_generate_from_python_refuses_what_the_cli_refuses(tmp_path, change, message):
    """megadalle.sample.generate called from Python gets the CLI's checks, as ValueErrors naming the argument (a
    list of prompts and seed=None were TypeErrors from inside the tokenizer and the sampler; "" sampled)."""
    from megadalle.data.tokenizer import Tokenizer
    from megadalle.sample import generate
    from megadalle.sampling.load import load_model
    from megadalle.sampling.loop import SamplingSettings

    write_tiny_models(tmp_path)
    model = load_model(tmp_path / "model.safetensors", "transformer")
    dvae = load_model(tmp_path / "dvae.safetensors", "dvae")
    args = dict(prompt="a red circle", n=2, keep=1, batch_size=2, seed=0) | change
    with pytest.raises(ValueError, match=re.escape(message)):
        generate(model, dvae, None, Tokenizer(tmp_path / "tokenizer.model"), settings=SamplingSettings(),
                 progress=False, **args)


@pytest.mark.parametrize("settings,message", [
    ((1.0, -5, 0.9), "top_k=-5: must be an integer >= 0"), ((1.0, 0.5, 0.9), "top_k=0.5: must be an integer >= 0"),
    ((1.0, True, 0.9), "top_k=True: must be an integer"), ((1.0, 0, 1.5), "top_p=1.5: must be in (0, 1]"),
    ((1.0, 0, 0.0), "top_p=0.0: must be in (0, 1]"), ((1.0, 0, float("nan")), "top_p=nan: must be in (0, 1]"),
    ((0.0, 0, 0.9), "temperature=0.0: must be positive and finite"), (("1", 0, 0.9), "temperature='1': must be"),
    ((float("inf"), 0, 0.9), "temperature=inf: must be positive and finite")])
def test_generate_from_python_refuses_the_sampling_settings_the_cli_refuses_before_sampling(tmp_path, monkeypatch,
                                                                                         settings, message):
    """SamplingSettings(top_k=-5) and top_p=1.5 sampled silently; temperature=0 and top_p=0 failed inside the first
    batch, after the prefill. The CLI's own check refuses them now, with the CLI's words, before any sampling."""
    import megadalle.sample
    from megadalle.data.tokenizer import Tokenizer
    from megadalle.sampling.load import load_model
    from megadalle.sampling.loop import SamplingSettings

    write_tiny_models(tmp_path)
    model = load_model(tmp_path / "model.safetensors", "transformer")
    dvae = load_model(tmp_path / "dvae.safetensors", "dvae")
    monkeypatch.setattr(megadalle.sample, "sample_batches", lambda *a, **k: pytest.fail("sampling began"))
    with pytest.raises(ConfigError, match=re.escape(message)) as refused:
        generate(model, dvae, None, Tokenizer(tmp_path / "tokenizer.model"), "a red circle", 2, 1, 2,
                 SamplingSettings(*settings), 0, progress=False)
    temperature, top_k, top_p = settings
    if type(top_k) is int and isinstance(temperature, float):  # what the CLI's schema types: its message
        with pytest.raises(ConfigError) as cli:
            compose_generate(f"temperature={temperature}", f"top_k={top_k}", f"top_p={top_p}")
        assert str(cli.value) == str(refused.value)


def compose_generate(*overrides):
    from megadalle.config.sample import GenerateConfig

    return build(GenerateConfig, top_level(compose("generate", ["weights=model", "prompt=a cat", *overrides]),
                                           GenerateConfig), "")


def test_a_prompt_with_an_escaped_dollar_brace_is_sampled_as_written(tmp_path):
    """`\\${` is OmegaConf's literal `${`: the prompt reaches the sampler and scores.json as `a ${x} cat` (the verb's
    keys are resolved once; build used to resolve the result a second time and fail on `${x}`)."""
    from megadalle.cli import main

    write_tiny_models(tmp_path)
    out = tmp_path / "out"
    assert main(["generate", f"weights={tmp_path / 'model.safetensors'}", "prompt=a \\${x} cat", "n=1", "keep=1",
                 f"output={out}"]) == 0
    assert json.loads((out / "scores.json").read_text())["prompt"] == "a ${x} cat"


def test_generate_samples_in_the_dtype_asked(tmp_path):
    """dtype=auto is fp32 on the CPU (bf16 decodes slower there); bf16 on request; a bad name is refused by name."""
    write_tiny_models(tmp_path)
    common = [f"weights={tmp_path / 'model.safetensors'}", "prompt=a red circle", "n=2", "keep=1", "top_k=5"]
    for dtype, expected in (("auto", "float32"), ("bf16", "bfloat16")):
        out = tmp_path / dtype
        assert run(compose("generate", common + [f"dtype={dtype}", f"output={out}"])) == 0
        report = json.loads((out / "scores.json").read_text())
        assert report["dtype"] == expected and len(report["all_scores"]) == 2
    with pytest.raises(ConfigError, match="dtype='fp16'"):
        run(compose("generate", common + ["dtype=fp16", f"output={tmp_path / 'bad'}"]))


def test_generate_checks_the_batch_fits_before_sampling(tmp_path, monkeypatch):
    """On a GPU the cache of `batch_size` samples is checked against free memory first (sampling/memory.py)."""
    import megadalle.sample

    write_tiny_models(tmp_path)
    seen = []
    monkeypatch.setattr(megadalle.sample, "check_device_fits", lambda model, batch:
                        seen.append((batch, next(model.parameters()).dtype, next(model.parameters()).device.type)))
    run(compose("generate", [f"weights={tmp_path / 'model.safetensors'}", "prompt=a red circle", "n=3", "keep=1",
                             "batch_size=32", f"output={tmp_path / 'out'}"]))
    assert seen == [(3, torch.float32, "cpu")]


def test_every_seed_gives_a_batch_generator():
    from megadalle.sampling.loop import batch_generator

    assert batch_generator(20_000_000_000_000, 3, "cpu").initial_seed() == (20_000_000_000_000 * 1_000_003 + 3) % 2**64
    assert batch_generator(-1, 0, "cpu").initial_seed() == torch.Generator().manual_seed(-1_000_003).initial_seed()
    assert batch_generator(7, 2, "cpu").initial_seed() == 7 * 1_000_003 + 2  # the seeds of every earlier run


def test_generate_checks_its_output_first_and_keeps_only_this_runs_samples(tmp_path, capsys):
    from megadalle.cli import main

    write_tiny_models(tmp_path)
    args = ["generate", f"weights={tmp_path / 'model.safetensors'}", "prompt=a red circle", "n=4", "batch_size=4"]
    (tmp_path / "afile").touch()
    for output in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        assert main([*args, "keep=1", f"output={output}"]) == 2
        assert "a file is in the way" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main([*args, "keep=4", f"output={out}"]) == 0
    assert main([*args, "keep=1", f"output={out}", "overwrite=true"]) == 0
    assert sorted(p.name for p in out.glob("sample_*.png")) == ["sample_00.png"]


def test_generate_names_an_unfinished_export(tmp_path, capsys):
    """A model folder whose export was killed (no bundle.json yet): said as such, not as a missing dVAE or CLIP."""
    from megadalle.cli import main

    pieces, folder = tmp_path / "pieces", tmp_path / "folder"
    pieces.mkdir()
    write_tiny_models(pieces)
    (folder / "transformer").mkdir(parents=True)  # killed after the Transformer, before the rest was copied
    (pieces / "model.safetensors").rename(folder / "transformer" / "model.safetensors")
    args = ["generate", f"weights={folder}", "prompt=a red circle", "n=1", "keep=1", f"output={tmp_path / 'out'}"]
    assert main(args) == 2
    assert f"{folder}: unfinished export (no bundle.json): rerun `megadalle export` with output={folder}" in (
        capsys.readouterr().err)
