"""bf16 at ZeRO stage 0: DeepSpeed's FP16_UnfusedOptimizer, which wraps torch's AdamW there, takes a zero-gradient
warm-up step in its constructor, which train/engine.undo_warmup_step undoes, so that training starts from the state
every other layout starts from."""
import deepspeed.comm
import torch
from deepspeed.runtime.fp16.unfused_optimizer import FP16_UnfusedOptimizer

from megadalle.train.engine import undo_warmup_step
from megadalle.train.masters import stage0_masters


def test_the_warmup_step_is_undone(monkeypatch):
    monkeypatch.setattr(deepspeed.comm, "get_rank", lambda *args, **kwargs: 0)  # the constructor logs on rank 0
    weights = [torch.nn.Parameter(torch.full((3,), 0.5, dtype=torch.bfloat16)),
               torch.nn.Parameter(torch.full((2, 2), 2.0, dtype=torch.bfloat16))]
    optimizer = FP16_UnfusedOptimizer(torch.optim.AdamW(weights, lr=0.1, weight_decay=0.5),
                                      low_precision_dtype=torch.bfloat16)
    assert any(not torch.equal(master, weight.float()) for weight, master in stage0_masters(optimizer))
    assert undo_warmup_step(optimizer)
    for weight, master in stage0_masters(optimizer):
        assert torch.equal(master, weight.float())
    assert not optimizer.optimizer.state
    reference = [torch.nn.Parameter(weight.detach().float()) for weight in weights]
    plain = torch.optim.AdamW(reference, lr=0.1, weight_decay=0.5)
    for weight, twin in zip(weights, reference):
        weight.grad = torch.full_like(weight, 0.25)
        twin.grad = torch.full_like(twin, 0.25)
    optimizer.step()
    plain.step()  # the first update: bias corrections of step 1, one decay step
    for (_, master), twin in zip(stage0_masters(optimizer), reference):
        assert torch.allclose(master, twin.detach())
