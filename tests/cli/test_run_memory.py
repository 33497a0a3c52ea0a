"""mem_gib is each run's own peak, though several runs share a process (a sweep's jobs, the demo's stages)."""
import json

from megadalle.cli import main

RUN = ["train", "data=synthetic", "model=tiny", "trainer=tiny", "trainer.steps=2", "trainer.warmup_steps=0",
       "trainer.log_every=1", "data.num_workers=0", "logger=none"]


def peak_mem(run):
    return max(json.loads(line)["mem_gib"] for line in (run / "metrics.jsonl").read_text().splitlines())


def test_each_run_in_a_process_reports_its_own_peak_memory(tmp_path):
    """mem_gib was the process's peak: a sweep's every later job reported the largest job's memory before it."""
    big, small = tmp_path / "big", tmp_path / "small"
    assert main([*RUN, "trainer.micro_batch=256", f"run_dir={big}"]) == 0
    assert main([*RUN, "trainer.micro_batch=2", f"run_dir={small}"]) == 0
    assert peak_mem(small) < 0.8 * peak_mem(big)


def test_a_cuda_runs_peak_is_reset_at_its_start(monkeypatch):
    import torch

    from megadalle.train import speed

    resets = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: resets.append(True))
    speed.Speed(4, None, None, 989.0, 1).start(None)
    assert resets == [True]
