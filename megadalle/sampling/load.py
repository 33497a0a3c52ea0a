"""Load a model for sampling from exported weights or straight from a training run.

Exported weights (megadalle.weights: one .safetensors file, an index JSON, or a folder of shards)
carry their kind and config, so the model is rebuilt without any other input, on the meta device
and then given the loaded tensors (no second, randomly initialised copy); a run directory (it holds
run.json) is rebuilt by megadalle.train.consolidate from the run's own record. Either way the caller
gets a module in eval mode in the dtype it asks for (float32 unless told otherwise).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from megadalle.config import build
from megadalle.errors import UserError
from megadalle.weights import check_into, load_into, read_config


class ModelNotFound(UserError, FileNotFoundError):
    """A weights file or run directory that is not there (the CLI prints it as one line)."""


class WrongKind(UserError, ValueError):
    """A run directory of another model than the one asked for (a dVAE run given as the Transformer)."""


def _builders() -> dict[str, tuple[type, type]]:
    from megadalle.config.clip import ClipConfig
    from megadalle.config.dvae import DVAEConfig
    from megadalle.config.model import TransformerConfig
    from megadalle.models.clip import CLIP
    from megadalle.models.dvae import DVAE
    from megadalle.models.transformer import Transformer

    return {"transformer": (TransformerConfig, Transformer), "dvae": (DVAEConfig, DVAE), "clip": (ClipConfig, CLIP)}


def _builder(kind: str) -> Callable[[dict], nn.Module]:
    """The `kind` model built of an exported config (`load_into` and `check_into` call it on the meta device)."""
    config_cls, model_cls = _builders()[kind]
    return lambda config: model_cls(build(config_cls, config, kind))


def load_model(path: str | Path, kind: str, ema: bool | None = None, dtype: torch.dtype | str = torch.float32,
               device: torch.device | str = "cpu") -> nn.Module:
    """A `kind` model ("transformer", "dvae", "clip") from a .safetensors file or a run directory, its floating
    tensors in `dtype` (a floating torch.dtype, or as `generate` names it: auto, fp32, bf16), on `device`
    (both checked as the verbs check them: megadalle.devices). `ema`: a run directory's EMA, its live weights, or
    with None (the default, as the verbs' ema=auto) its EMA where it trained one (consolidate.chosen_ema), so a
    run read here is the model `generate` and `encode` sample with. Exported weights are read tensor by tensor
    onto `device` in `dtype`: a 12B exported in bf16 and sampled in bf16 on a GPU takes its 24.6 GB there and
    none in host memory. The build leaves torch's global generator as it was (the Transformer draws its layers'
    base seed from it, megadalle.models.seeding): loading weights is no random draw of the caller's."""
    from megadalle.config.ema import ema_argument
    from megadalle.devices import pick_device, pick_dtype

    ema = ema_argument(ema)
    path = Path(path)
    if not path.exists():
        raise ModelNotFound(f"no {kind} weights file or run directory at {path}")
    builders = _builders()
    if kind not in builders:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(builders)}")
    not_a_folder_or_checkpoint(path, kind)
    device = pick_device(str(device))
    dtype = pick_dtype(dtype, device)
    with torch.random.fork_rng(devices=[]):
        if is_run(path):
            from megadalle.train.consolidate import load_run

            model = load_run(path, ema=ema, dtype=dtype, kind=kind)[0].to(device)
        else:
            model = load_into(path, kind, _builder(kind), device, dtype)
    if kind == "transformer":  # trained with attention_backend=triton on GPUs, it still samples on a CPU
        model.use_attention_backend("auto")
    return model.eval()


def not_a_folder_or_checkpoint(path: Path, kind: str) -> None:
    """Refuse the two paths a Python caller most often gives for weights, which were "holds neither
    model.safetensors.index.json nor model.safetensors": a model folder (its `kind` model is a file or folder in it,
    and `megadalle.load_pipeline` reads them all) and a checkpoint inside a training run (the run reads its newest;
    the refusal says how to read the one given, as the verbs' does)."""
    from megadalle.sampling.files import CLIP, DVAE, TRANSFORMER, is_bundle, refuse_checkpoint

    if is_bundle(path):
        inside = path / {"transformer": TRANSFORMER, "dvae": DVAE, "clip": CLIP}[kind]
        raise WrongKind(f"{path} is a model folder: its {kind} is {inside}, and megadalle.load_pipeline({str(path)!r}) "
                        "reads all its models")
    refuse_checkpoint(path, "path")


def check_model(path: str | Path, kind: str) -> None:
    """The `kind` model's exported weights at `path` checked as `load_model` checks them before it reads a tensor
    (their config JSON and its kind, every file whole, the tensors' names and shapes those of the model the JSON
    describes), and not read: `export` copies a dVAE or CLIP into a model folder as it stands, and needs to know
    only that `generate` will load it. The build leaves torch's global generator as it was (`load_model`)."""
    with torch.random.fork_rng(devices=[]):
        check_into(path, kind, _builder(kind))


def is_run(path: str | Path) -> bool:
    return (Path(path) / "run.json").is_file()


def checkpoint_in_run(path: str | Path) -> tuple[Path, Path | None] | None:
    """(the training run, the checkpoint) that `path` lies in: the run's `checkpoints` folder (checkpoint None), a
    `step_*` checkpoint in it, or a file of one. None for anything else (a run's exported weights included)."""
    path = Path(path)
    for inner, folder in zip((None, path, *path.parents), (path, *path.parents)):
        if folder.name == "checkpoints" and is_run(folder.parent):
            return folder.parent, inner
    return None


def check_run_kind(path: str | Path, spec, kind: str, instead: str = "") -> None:
    """Refuse the training run at `path`, whose task exports `spec` (Task.export_spec), as a `kind` model; `instead`:
    the caller's way to read such a run, said after the refusal."""
    if spec.kind != kind:
        way_out = f"; {instead}" if instead else ""
        raise WrongKind(f"{path} is a {spec.kind!r} training run, not a {kind!r} one{way_out}")


def model_config(path: str | Path, kind: str):
    """The config of the `kind` model at `path` (weights or a run directory), read without any tensor: what
    `load_model` would build, known before minutes of reading a large model's weights."""
    path = Path(path)
    if not path.exists():
        raise ModelNotFound(f"no {kind} weights file or run directory at {path}")
    config_cls = _builders()[kind][0]
    if is_run(path):
        from megadalle.train.consolidate import run_task

        spec = run_task(path)[0].export_spec()
        check_run_kind(path, spec, kind)
        config = spec.config
        return config if isinstance(config, config_cls) else build(config_cls, config, kind)
    return build(config_cls, read_config(path, kind), kind)


def beside(weights: str | Path, given: str | None, name: str) -> Path:
    """`given`, or the file `name` beside `weights`: in its folder, or, when `weights` is a folder (a run
    directory or exported shards), inside it or beside it."""
    if given:
        return Path(given)
    weights = Path(weights)
    places = [weights / name, weights.parent / name] if weights.is_dir() else [weights.parent / name]
    for found in places:
        if found.exists():
            return found
    raise ModelNotFound(f"no {name} beside {weights} (expected {' or '.join(map(str, places))}); "
                        "give its path explicitly")
