"""A checkpoint that lacks one of the model's tensors is refused by name (train/consolidate.py `checked`).

Export and `load_run` (what `generate` reads a run directory with) stream the checkpoint's tensors one at a time, so
a missing one shows only at the end. Unnamed there, export failed in the safetensors writer it had planned ("1
tensors were never written whole"), naming its temporary output file, not the checkpoint, and `load_run` in
load_state_dict's missing keys: neither said which checkpoint lacked the tensor, the `checkpoint=` to avoid.
"""
import json
import re

import pytest
import torch

from megadalle.cli import main as cli
from megadalle.train.checkpoint import MANIFEST, CheckpointError
from megadalle.train.consolidate import export, load_run

import dist_launch as launch

MODULE_STATES = "mp_rank_00_model_states.pt"


@pytest.fixture(scope="module")
def run_without_a_tensor(tmp_path_factory):
    """A toy ZeRO-1 run of one step whose checkpoint's module states lost one tensor, and that tensor's name. The
    manifest is made to agree with the rewritten file: the checkpoint is complete, only not the run's model's."""
    root = tmp_path_factory.mktemp("missing")
    run = root / "run"
    launch.run(1, {"run_dir": str(run), "steps": 1, "zero_stage": 1, "checkpoint_every": 1}, root / "logs")
    (checkpoint,) = (run / "checkpoints").glob("step_*")
    states = torch.load(checkpoint / MODULE_STATES, weights_only=False)
    name = sorted(states["module"])[-1]
    del states["module"][name]
    torch.save(states, checkpoint / MODULE_STATES)
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    manifest["files"][MODULE_STATES] = (checkpoint / MODULE_STATES).stat().st_size
    (checkpoint / MANIFEST).write_text(json.dumps(manifest))
    return run, checkpoint, name.removeprefix("model.")


@pytest.mark.distributed
def test_export_and_load_run_refuse_it_naming_the_checkpoint_and_the_tensor(run_without_a_tensor, tmp_path, capsys):
    run, checkpoint, name = run_without_a_tensor
    refusal = re.escape(f"{checkpoint} lacks 1 of the model's tensors, e.g. {[name]}")
    with pytest.raises(CheckpointError, match=refusal):
        export(run, tmp_path / "weights.safetensors", dtype="fp32")
    with pytest.raises(CheckpointError, match=refusal):
        load_run(run)
    assert not (tmp_path / "weights.safetensors").exists()

    out = tmp_path / "out"
    capsys.readouterr()
    assert cli(["export", f"run={run}", f"output={out}", "weights_only=true", "dtype=fp32"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(refusal, err[0]), err
    assert not out.exists()
