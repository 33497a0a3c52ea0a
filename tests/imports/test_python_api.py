"""Reading models from Python as the CLI reads them: load_model's EMA default, the devices and dtypes it takes,
load_pipeline's paths, and a load that leaves the caller's random generator alone (hunt P1, P2, P3, P6, P11)."""
from __future__ import annotations

import pytest
import torch

import megadalle
from megadalle.bundle import read_model
from megadalle.bundle_write import write_bundle
from megadalle.devices import DeviceError
from megadalle.sampling.load import load_model
from megadalle.train.consolidate import load_run
from megadalle.weights import load_weights


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(t.equal(b.state_dict()[name]) for name, t in a.state_dict().items())


def test_a_run_read_in_python_is_its_ema_as_the_verbs_read_it(trained_ema):
    """load_model(RUN) read the live weights while generate and encode sample a run's EMA (ema=auto)."""
    run = trained_ema[0]
    live, ema = (load_run(run, ema=flag)[0] for flag in (False, True))
    assert not same(live, ema)
    for read in (load_model, read_model):
        assert same(read(run, "transformer"), ema) and same(read(run, "transformer", ema=False), live)


def test_load_run_reads_the_ema_by_default_as_load_model_does(trained_ema, trained):
    """consolidate.load_run defaulted to the live weights, where load_model, read_model and the verbs read a run's
    EMA where it trained one; a run without one is read as its live weights either way."""
    run = trained_ema[0]
    assert same(load_run(run)[0], load_run(run, ema=True)[0])
    assert same(load_run(trained[0])[0], load_run(trained[0], ema=False)[0])


@pytest.mark.parametrize("device", ["cpu:0", torch.device("cpu", 0)])
def test_every_name_of_the_cpu_loads(trained, device):
    """cpu:0 was reported as damaged weights ("re-export the weights"): safetensors names the CPU only `cpu`."""
    dvae = trained[2]
    state, _ = load_weights(dvae, "dvae", device)
    assert all(t.device.type == "cpu" for t in state.values())
    assert next(load_model(dvae, "dvae", device=device).parameters()).device.type == "cpu"


def test_the_meta_device_is_refused_in_one_line_naming_it(trained):
    dvae = trained[2]
    for read in (lambda: load_weights(dvae, "dvae", "meta"), lambda: load_model(dvae, "dvae", device="meta")):
        with pytest.raises(DeviceError, match=r"^device=meta: the meta device holds no values") as refused:
            read()
        assert "\n" not in str(refused.value) and "re-export" not in str(refused.value)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an mps device")
def test_a_device_this_machine_lacks_is_named_not_taken_for_damaged_weights(trained):
    """load_weights(f, device="mps") on a machine without one was a RuntimeError from deep in the read."""
    with pytest.raises(DeviceError, match=r"^device=mps: this machine has no mps device"):
        load_weights(trained[2], "dvae", "mps")


def test_load_model_takes_dtypes_and_devices_as_the_verbs_name_them(trained):
    """dtype="bf16" reached tensor.to as a device string; device=cuda on a CPU machine a pin_memory error."""
    dvae = trained[2]
    assert all(t.dtype == torch.bfloat16 for t in load_model(dvae, "dvae", dtype="bf16").parameters())
    assert all(t.dtype == torch.bfloat16 for t in load_weights(dvae, "dvae", dtype="bf16")[0].values())
    with pytest.raises(ValueError, match=r"^dtype='half': expected one of auto, fp32, bf16$"):
        load_model(dvae, "dvae", dtype="half")
    if not torch.cuda.is_available():
        for read in (lambda: load_model(dvae, "dvae", device="cuda"), lambda: load_weights(dvae, "dvae", "cuda")):
            with pytest.raises(DeviceError, match=r"^device=cuda: this machine has no CUDA GPU"):
                read()


def test_loading_leaves_the_global_generator_as_it_was(trained):
    """Building the Transformer drew its layers' base seed from the caller's generator."""
    run = trained[0]
    for read in (lambda: load_model(run, "transformer"), lambda: load_model(trained[2], "dvae")):
        torch.manual_seed(0)
        before = torch.get_rng_state()
        read()
        assert torch.get_rng_state().equal(before)


def test_load_run_and_export_leave_the_global_generator_as_it_was(trained, tmp_path):
    """Both built the run's model on the meta device with a draw from the caller's generator."""
    from megadalle.train.consolidate import export

    run = trained[0]
    for read in (lambda: load_run(run), lambda: export(run, tmp_path / "w.safetensors", dtype="fp32")):
        torch.manual_seed(0)
        before = torch.get_rng_state()
        read()
        assert torch.get_rng_state().equal(before)


@pytest.mark.parametrize("word, flag", [("false", False), ("False", False), ("true", True), ("auto", None)])
def test_ema_as_the_verbs_spell_it_means_what_it_says(trained_ema, word, flag):
    """ema="false" is truthy: it read the EMA, the opposite of what was asked."""
    run, dvae = trained_ema[0], str(trained_ema[2])
    expected = load_run(run, ema=flag)[0]
    for read in (lambda: load_run(run, ema=word)[0], lambda: load_model(run, "transformer", ema=word),
                 lambda: megadalle.load_pipeline(run, ema=word, rerank=False, dvae_weights=dvae).transformer):
        assert same(read(), expected)


@pytest.mark.parametrize("call", ["load_run", "load_model", "load_pipeline"])
def test_an_ema_or_rerank_of_no_such_meaning_is_refused_naming_it(trained_ema, call):
    run = trained_ema[0]
    with pytest.raises(ValueError, match="ema='yes': expected True, False or None"):
        {"load_run": lambda: load_run(run, ema="yes"), "load_model": lambda: load_model(run, "transformer", ema="yes"),
         "load_pipeline": lambda: megadalle.load_pipeline(run, ema="yes")}[call]()
    with pytest.raises(ValueError, match="rerank='false': expected True or False"):
        megadalle.load_pipeline(run, rerank="false")


def test_exported_transformer_weights_keep_the_generator_too(trained, tmp_path):
    run, _, dvae, clip = trained
    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(dvae), clip_weights=str(clip))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    load_model(folder / "transformer", "transformer")
    megadalle.load_pipeline(folder)
    assert torch.get_rng_state().equal(before)


def test_load_pipeline_takes_the_paths_generate_takes(trained, tmp_path):
    """load_pipeline("model/transformer") and a run directory were refused with advice to export over them, which
    export refuses; generate reads both."""
    run, tok, dvae, clip = trained
    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(dvae), clip_weights=str(clip))
    whole = megadalle.load_pipeline(folder)
    for path in (folder / "transformer", folder / "transformer" / "model.safetensors.index.json"):
        pipe = megadalle.load_pipeline(path)
        assert same(pipe.transformer, whole.transformer) and pipe.manifest == whole.manifest
    pipe = megadalle.load_pipeline(run)  # its dVAE and CLIP beside it, as generate weights=RUN finds them
    assert same(pipe.transformer, load_model(run, "transformer")) and same(pipe.clip, load_model(clip, "clip"))
    assert megadalle.load_pipeline(run, rerank=False).clip is None
    pipe = megadalle.load_pipeline(run, dvae_weights=str(dvae), clip_weights=str(clip))
    assert same(pipe.dvae, load_model(dvae, "dvae"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as refused:  # advice it can follow, not an export over the folder
        megadalle.load_pipeline(tmp_path / "empty")
    assert "output=" not in str(refused.value) and "rerank=False" in str(refused.value)


def test_a_pipeline_of_weights_that_are_not_there_names_the_path(tmp_path):
    """It blamed a missing CLIP, then (rerank=False) a missing dVAE, and never the path."""
    from megadalle.sampling.load import ModelNotFound

    for rerank in (True, False):
        with pytest.raises(ModelNotFound, match=f"weights={tmp_path / 'nope'}: no weights file, model folder or run "
                                                "directory there"):
            megadalle.load_pipeline(tmp_path / "nope", rerank=rerank)


def test_load_model_of_a_model_folder_or_a_checkpoint_says_what_to_load(trained, tmp_path):
    """Both were "holds neither model.safetensors.index.json nor model.safetensors", no way out named."""
    from megadalle.errors import BundleError
    from megadalle.sampling.load import WrongKind

    run, _, dvae, clip = trained
    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(dvae), clip_weights=str(clip))
    with pytest.raises(WrongKind, match=f"{folder} is a model folder: its dvae is {folder / 'dvae.safetensors'}, and "
                                        "megadalle.load_pipeline"):
        load_model(folder, "dvae")
    step = next((run / "checkpoints").glob("step_*"))
    with pytest.raises(BundleError, match=f"path={step}: inside the checkpoints of the training run {run}; pass "
                                          f"path={run}"):
        load_model(step, "transformer")


def test_import_megadalle_reaches_its_submodules_by_name():
    """`megadalle.sample.generate` after `import megadalle`, as README writes it, was an AttributeError unless the
    submodule had been imported first; `import megadalle` itself still imports no torch."""
    import subprocess
    import sys

    code = ("import sys, megadalle; assert 'torch' not in sys.modules; "
            "print(megadalle.sample.generate.__name__, hasattr(megadalle, 'nosuch'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "generate False", done.stderr[-2000:]
