"""Resuming a checkpoint saved while megadalle trained with apex's FusedAdam (on CUDA where apex was importable,
before it took torch's fused AdamW everywhere).

apex counts Adam's step in each param group and keeps none in the parameters' state; torch's AdamW reads it from
each parameter's state (`Adam.__setstate__`: KeyError 'step', which the load then called damage). A torch optimizer
also takes a loaded group whole, so apex's groups, which lack `decoupled_weight_decay` and `fused`, would have
turned AdamW into Adam with L2 decay. The conversion moves each group's step into its parameters' state and keeps
the rest of the group from the optimizer built here.

Under ZeRO-3 DeepSpeed steps the torch optimizer once per sub-group (stage3.py `_optimizer_step`), and apex added
1 to the group's step at each: a group's saved step is the updates times its sub-groups, which are the flat
partitions the saved group lists (stage3.py `_set_fp32_optimizer_param_groups`). It is divided back: the moments
are right, only apex's bias corrections had run ahead.

At ZeRO stage 0 in bf16 DeepSpeed wrapped apex's FusedAdam in its FP16_Optimizer (flat fp32 masters,
`fp32_groups_flat`, and no loss-scale keys at bf16), where it now wraps torch's AdamW in FP16_UnfusedOptimizer,
whose load reads `dynamic_loss_scale` first (KeyError). That layout is not converted: it is refused by name
(`FLAT_MASTERS`), while export still reads it: the module's bf16 weights, or at dtype=fp32 the flat masters cut
at the parameters' sizes (consolidate.py), except a pipeline's, whose masters export does not read (bf16 only).
"""
from __future__ import annotations

import torch

from megadalle.train.checkpoint import CheckpointError

SAVED_WITH_APEX = "saved with apex FusedAdam (per-group step)"
FLAT_MASTERS = ("saved at ZeRO stage 0 in bf16 with apex's FusedAdam, in DeepSpeed's FP16_Optimizer layout (flat fp32 "
                "masters), which this version does not convert")
FLAT_MASTERS_KEY_ERROR = ("dynamic_loss_scale",)
"""The KeyError's args when FP16_UnfusedOptimizer loads that layout: the first key it reads, which only
FP16_Optimizer at bf16 leaves out (an fp16 one saves its loss scale)."""


def accept(optimizer: torch.optim.Optimizer, zero3: bool) -> None:
    """Make `optimizer.load_state_dict` convert apex's layout (the load paths of ZeRO 0-3, bf16 and pipelines all
    end in it, except the universal ones: `settle`)."""
    optimizer.register_load_state_dict_pre_hook(lambda opt, state_dict: from_apex(opt, state_dict, zero3))


def from_apex(optimizer: torch.optim.Optimizer, state_dict: dict, zero3: bool) -> dict | None:
    """`state_dict` in torch AdamW's layout if it is in apex FusedAdam's (a `step` in its groups), else None."""
    saved_groups = state_dict["param_groups"]
    if not any("step" in group for group in saved_groups):
        return None
    state, groups = dict(state_dict["state"]), []
    for saved, current in zip(saved_groups, optimizer.param_groups):
        saved = dict(saved)
        step = saved.pop("step", None)
        saved.pop("bias_correction", None)  # apex's switch, always on here: torch's AdamW always corrects
        if step is not None:
            updates = _updates(step, len(saved["params"]) if zero3 else 1)
            for index in saved["params"]:
                if state.get(index) and "step" not in state[index]:
                    state[index] = {**state[index], "step": float(updates)}  # Adam.__setstate__ makes it a tensor
        groups.append({**{key: value for key, value in current.items() if key != "params"}, **saved})
    return {**state_dict, "state": state, "param_groups": groups}


def settle(optimizer: torch.optim.Optimizer) -> None:
    """After a load, move a step that DeepSpeed's universal loading copied into the groups (from apex's saved
    groups, bypassing `load_state_dict`) into each parameter's state, where torch's AdamW reads it."""
    for group in optimizer.param_groups:
        step = group.pop("step", None)
        group.pop("bias_correction", None)
        for param in group["params"] if step is not None else []:
            state = optimizer.state.get(param)
            if state and "step" not in state:
                device = param.device if group.get("fused") or group.get("capturable") else "cpu"
                state["step"] = torch.tensor(float(step), dtype=torch.float32, device=device)


def _updates(step: int, sub_groups: int) -> int:
    if sub_groups < 1 or step % sub_groups:
        raise CheckpointError(f"the optimizer state was {SAVED_WITH_APEX} under ZeRO-3, whose step {step} is no "
                              f"multiple of its {sub_groups} sub-groups: cannot tell the updates it counts")
    return step // sub_groups
