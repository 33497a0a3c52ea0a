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
    speed.reset_peak_memory()  # what the trainer calls as a run starts, before its engine is built
    assert resets == [True]


def test_without_proc_the_peak_is_ru_maxrss_in_kib_on_linux_and_in_bytes_on_macos(monkeypatch, tmp_path):
    """macOS has no /proc and gives ru_maxrss in bytes: its mem_gib was 1024 times too large."""
    import resource
    import sys
    from types import SimpleNamespace

    from megadalle.train import speed

    monkeypatch.setattr(speed, "PROC", tmp_path / "no-proc")
    monkeypatch.setattr(speed.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=3 * 2**30))
    monkeypatch.setattr(sys, "platform", "darwin")
    assert speed.memory() == {"mem_gib": 3.0}
    monkeypatch.setattr(sys, "platform", "linux")
    assert speed.memory() == {"mem_gib": 3.0 * 1024}
