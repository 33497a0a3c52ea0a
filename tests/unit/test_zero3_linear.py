"""A ZeRO-3 run gives back torch.nn.functional.linear when it ends: DeepSpeed's zero.Init replaces it with its
memory-efficient linear for the rest of the process, which ran every later linear as a product and a separate bias
add (one more rounding in bf16: a sweep's next job, an in-process caller's own models)."""
import deepspeed
import torch

from megadalle.cli import main


def test_a_zero3_run_leaves_functional_linear_as_it_found_it(tmp_path, monkeypatch):
    before, during = torch.nn.functional.linear, []
    enter = deepspeed.zero.Init.__enter__
    monkeypatch.setattr(deepspeed.zero.Init, "__enter__", lambda init: during.append(init.mem_efficient_linear) or
                        enter(init))
    assert main(["train", "data=synthetic", "model=tiny", "trainer=tiny", "logger=none", "deepspeed=zero3",
                 "trainer.steps=1", "trainer.warmup_steps=0", f"run_dir={tmp_path / 'run'}"]) == 0
    assert during == [True], "the model was not built under a zero.Init that replaces the linear: nothing proved"
    assert torch.nn.functional.linear is before
