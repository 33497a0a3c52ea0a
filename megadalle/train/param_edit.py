"""Rewrite a parameter between updates in every copy the optimizer keeps of it.

A task that re-initialises part of a parameter while it trains (the dVAE reviving dead codes) cannot
just write `param.data`: wherever the optimizer steps an fp32 master of it (train/masters.py: ZeRO-1/2,
DeepSpeed's bf16 optimizers, stage 0 in bf16 too) the next update would write the old values back; Adam's
moments would keep the old entries' gradient history. DeepSpeed's `safe_*_full_*` accessors reach a ZeRO-1/2
master and its moments whatever the partitioning (each rank writes its own fragment of the full tensor it is
given); at stage 0 each rank holds the whole master (the parameter itself in fp32) and its moments. ZeRO-3
keeps no whole parameter on a rank, and rewriting it would need a gather per edit: it is refused (the
preflight says so first). The EMA (train/ema.py) restarts at the new value where an edit changed the
parameter, each rank in its own piece.

`clamp` keeps a parameter in a range (CLIP's logit scale) in every layout, ZeRO-3 included: being elementwise, it
needs no whole tensor, each rank clamps every copy it holds (the weights, its fp32 master, fragment or partition);
the moments and the EMA are left alone (the EMA averages the clamped weights).
"""
from __future__ import annotations

from typing import Callable

import torch

from megadalle.train.ema import EMA
from megadalle.train.ema_swap import gathered
from megadalle.train.masters import local_master, torch_optimizer, whole_master

MOMENTS = ("exp_avg", "exp_avg_sq")
"""Adam's (and AdamW's) per-element state."""

Edit = Callable[[torch.Tensor, str], torch.Tensor]
"""(full fp32 tensor, what it is: "param" or a name of MOMENTS) -> its new value, same shape."""


class ParamEditor:
    """Rewrites parameters of a built engine (same edit on every rank: all must call `apply` alike)."""

    def __init__(self, engine, zero_stage: int, ema: EMA | None = None):
        self.engine, self.zero_stage, self.ema = engine, zero_stage, ema

    @torch.no_grad()
    def apply(self, param: torch.nn.Parameter, edit: Edit) -> None:
        """Replace `param` and each of its Adam moments (once the optimizer has them) by `edit` of them; the EMA
        restarts at the new value where it changed (EMA.restart_where_edited)."""
        if self.zero_stage >= 3 or hasattr(param, "ds_id"):
            raise NotImplementedError("rewriting a parameter between updates needs deepspeed.zero_stage <= 2 "
                                      "(ZeRO-3 partitions every parameter)")
        before = self._read(param)
        value = edit(before, "param")
        if hasattr(param, "_hp_mapping"):  # ZeRO-1/2 or the bf16 optimizer: an fp32 master fragment per rank
            from deepspeed.utils import (safe_get_full_optimizer_state, safe_set_full_fp32_param,
                                         safe_set_full_optimizer_state)

            self._link_moments()
            safe_set_full_fp32_param(param, value)
            for key in MOMENTS:
                state = safe_get_full_optimizer_state(param, key)
                if state is not None:
                    safe_set_full_optimizer_state(param, edit(state.float(), key), key)
        elif (master := whole_master(param, self.engine.optimizer)) is not None:  # stage 0: the whole master
            master.copy_(value)
            held = torch_optimizer(self.engine.optimizer).state.get(master, {})  # Adam's, keyed by the master
            for key in MOMENTS:
                if (moment := held.get(key)) is not None:  # none before its first step
                    moment.copy_(edit(moment.float(), key))
        param.data.copy_(value)
        if self.ema is not None:
            self.ema.restart_where_edited(param, before, value)

    @torch.no_grad()
    def clamp(self, param: torch.nn.Parameter, low: float, high: float) -> None:
        """Keep `param` in [low, high] in every copy this rank holds (every rank calls it; no collective): the
        weights (whole, or ZeRO-3's partition and the whole where DeepSpeed keeps it gathered) and the optimizer's
        fp32 master of them (this rank's fragment or partition, or the weights themselves)."""
        if hasattr(param, "ds_id"):
            from deepspeed.utils import safe_get_local_fp32_param, safe_set_local_fp32_param

            param.ds_tensor.data.clamp_(low, high)
            if gathered(param):
                param.data.clamp_(low, high)
            safe_set_local_fp32_param(param, safe_get_local_fp32_param(param).clamp(low, high))
            return
        param.data.clamp_(low, high)
        master = local_master(param, self.engine.optimizer)
        if master is not None:
            master.clamp_(low, high)

    def _link_moments(self) -> None:
        """Point every parameter's fragment at its piece of Adam's moments.

        DeepSpeed 0.19 links them once, right after the first parameter group's first step, when the
        other groups have no state yet (stage_1_and_2._optimizer_step, bf16_optimizer.step): the
        no-decay group's moments are then unreachable through `safe_*_optimizer_state`. Linking is a
        map of views, so doing it again once every group has stepped is cheap and changes nothing else."""
        optimizer = self.engine.optimizer
        if hasattr(optimizer, "_lazy_init_hp_params_optimizer_state"):
            optimizer._hp_optimizer_states_linked = False
            optimizer._lazy_init_hp_params_optimizer_state()

    def _read(self, param: torch.nn.Parameter) -> torch.Tensor:
        """The whole fp32 master (the bf16 weights round it), or the weights where the optimizer steps no master."""
        if hasattr(param, "_hp_mapping"):
            from deepspeed.utils import safe_get_full_fp32_param

            return safe_get_full_fp32_param(param).float()
        master = whole_master(param, self.engine.optimizer)
        return (param if master is None else master).detach().float().clone()
