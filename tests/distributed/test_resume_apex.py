"""A checkpoint whose Adam state apex's FusedAdam saved (megadalle took it on CUDA where apex was importable) resumes
in torch's AdamW with the losses of the run that saved it, at every ZeRO stage and in bf16 (but one, below); before,
the load raised KeyError 'step' and called the checkpoint damaged. The run names its optimizer and LayerNorm on a
[train] line and in run.json.

apex kept the step in each param group, none in a parameter's state, and under ZeRO-3 counted it once per sub-group
(DeepSpeed steps each one apart): `to_apex` rewrites the checkpoint torch's AdamW saved into that layout.

The one not covered: at bf16 ZeRO stage 0 DeepSpeed wrapped apex's FusedAdam in its FP16_Optimizer (flat fp32 masters),
not the FP16_UnfusedOptimizer that saved the (0, bf16) checkpoint below; that layout is refused by name
(tests/unit/test_apex_adam.py).
"""
import json
import shutil

import pytest
import torch

import dist_launch as launch

OPTS = {"steps": 6, "checkpoint_every": 3, "dropout": False}


def torch_states(node):
    """The torch optimizer state dicts inside a loaded DeepSpeed checkpoint file."""
    if isinstance(node, dict):
        if "state" in node and "param_groups" in node:
            yield node
        else:
            for value in node.values():
                yield from torch_states(value)


def to_apex(state_dict: dict, zero3: bool) -> None:
    for group in state_dict["param_groups"]:
        (step,) = {int(state_dict["state"][index].pop("step")) for index in group["params"]}
        kept = {key: group[key] for key in ("lr", "betas", "eps", "weight_decay", "initial_lr", "params")}
        group.clear()
        group.update(kept, bias_correction=True, step=step * (len(kept["params"]) if zero3 else 1))


def saved_by_apex(run_dir, tag: str, zero3: bool) -> int:
    """Rewrite the checkpoint `tag` of `run_dir` as apex's FusedAdam would have saved it, keeping its manifest true;
    returns how many optimizer states it rewrote (one a rank: at stage 0 in its model states file)."""
    folder = run_dir / "checkpoints" / tag
    manifest = json.loads((folder / "manifest.json").read_text())
    converted = 0
    for file in folder.glob("*_states.pt"):
        saved = torch.load(file, weights_only=False)
        for state_dict in torch_states(saved):
            to_apex(state_dict, zero3)
            converted += 1
        torch.save(saved, file)
        manifest["files"][file.name] = file.stat().st_size  # the size its completeness test compares
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return converted


@pytest.mark.distributed
@pytest.mark.parametrize("zero_stage, precision", [(0, "fp32"), (1, "fp32"), (2, "fp32"), (3, "fp32"), (0, "bf16"),
                                                   (1, "bf16")])
def test_apex_adam_checkpoint_resumes(tmp_path, zero_stage, precision):
    """bf16 takes DeepSpeed's FP16_UnfusedOptimizer at stage 0 (bf16 accumulation), its BF16_Optimizer at stage 1.
    At (0, bf16) the checkpoint is FP16_UnfusedOptimizer's with apex's Adam layout inside, which the converter must
    read, but not what apex's runs saved there (FP16_Optimizer: see the module's docstring)."""
    run_dir = tmp_path / "run"
    opts = {**OPTS, "zero_stage": zero_stage, "precision": precision, "run_dir": str(run_dir),
            "grad_accum_dtype": "bf16" if zero_stage == 0 else "fp32"}
    launch.run(1, opts, tmp_path / "logs")
    reference = launch.losses(run_dir)
    log = (tmp_path / "logs" / "rank0.log").read_text()
    assert "[train] optimizer: torch AdamW (fused), layer_norm: torch LayerNorm" in log
    assert json.loads((run_dir / "run.json").read_text())["kernels"] == {"optimizer": "torch AdamW (fused)",
                                                                       "layer_norm": "torch LayerNorm"}
    checkpoints = run_dir / "checkpoints"
    shutil.rmtree(checkpoints / "step_00000006")
    (checkpoints / "latest").write_text("step_00000003")
    assert saved_by_apex(run_dir, "step_00000003", zero3=zero_stage == 3) == 1

    launch.run(1, opts, tmp_path / "resume_logs")
    assert "resumed from" in (tmp_path / "resume_logs" / "rank0.log").read_text()
    resumed = launch.losses(run_dir)
    assert [resumed[step] for step in range(3, 6)] == pytest.approx([reference[step] for step in range(3, 6)],
                                                                    rel=1e-6, abs=0)


@pytest.mark.distributed
@pytest.mark.parametrize("zero_stage", [2, 3])
def test_apex_adam_checkpoint_on_another_world_size(tmp_path, zero_stage):
    """Through DeepSpeed's universal checkpoint, which bypasses the optimizer's load_state_dict: ZeRO-2's state goes
    on (the step it copies into the groups moves into the parameters' state); ZeRO-3's universal loading reads a
    parameter's step itself, so it is refused by name, not as damage."""
    run_dir = tmp_path / "run"
    opts = {**OPTS, "zero_stage": zero_stage, "run_dir": str(run_dir), "micro_batch": 2}
    launch.run(2, {**opts, "grad_accum": 1}, tmp_path / "logs")
    assert saved_by_apex(run_dir, "step_00000006", zero3=zero_stage == 3) == 2
    more = {**opts, "steps": 8, "grad_accum": 2, "record_optimizer": True}
    if zero_stage == 3:
        with pytest.raises(AssertionError, match=r"saved with apex FusedAdam \(per-group step\)"):
            launch.run(1, more, tmp_path / "resume_logs")
        assert "damaged" not in (tmp_path / "resume_logs" / "rank0.log").read_text()
        return
    launch.run(1, more, tmp_path / "resume_logs")
    assert json.loads((run_dir / "adam_steps_rank0.json").read_text()) == [8]
