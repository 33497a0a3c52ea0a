"""The 12B's width on 4 CPU ranks: per-rank memory, checkpoint and export measured beside `plan`.

    python benchmarks/scale_rehearsal.py                       # d_model 3968, 62 heads, real vocabularies
    python benchmarks/scale_rehearsal.py --toy --modes zero1,pipe --out /tmp/toy.json   # what CI runs

Each mode (zero1, zero2, zero3 with persistence threshold 0 so every tensor is partitioned, and a
2-stage x 2 data-parallel pipeline) trains two updates through the real trainer (megadalle.train.loop:
engine, EMA, checkpoint) on DS_ACCELERATOR=cpu, gloo, fp32, with random tokens seeded by the step
(no data set needed). Every rank records, from its own /proc/self/status and /proc/self/io:
- baseline: the same mode's peaks with the tiny model (interpreter, torch, DeepSpeed, gloo), as
  issue 10 measured; with --toy, resident memory after the imports and the process group;
- construction: the high-water mark (VmHWM) when the first update starts (model built, deepspeed.initialize done);
- two steps: VmHWM after the second update;
- checkpoint: bytes it wrote (wchar) while saving the checkpoint at step 2.
Then `megadalle export` runs in its own process and its peak (ru_maxrss) is taken above the peak of a
process that only imports the same modules. Every figure stands beside `megadalle plan device=cpu`'s
prediction for the same config (memory above the baseline), and the targets of issue 10 are
reported, not asserted. Modes run one after another; before each, the memory the plan predicts for
its 4 ranks must be available (MemAvailable), so a shared machine is never pushed into the OOM killer.
Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 2 ** 20
MODES = {
    "zero1": {"zero_stage": 1},
    "zero2": {"zero_stage": 2, "overlap_comm": True},
    "zero3": {"zero_stage": 3, "overlap_comm": True, "extra": {"zero_optimization": {"stage3_param_persistence_threshold": 0}}},
    "pipe": {"zero_stage": 1, "pipeline_stages": 2},
}
REAL = ["model=12b", "model.n_layers=1", "model.attention_pattern=[row]", "model.text_len=64", "model.grid_size=8"]
"""The 12B's width and vocabularies (d_model 3968, 62 heads x 64, text 16384, image 8192), one block,
64 text + 8x8 image positions: ~385M parameters, so 4 fp32 ranks fit in a 24 GB machine."""
TOY = ["model=tiny"]
WORLD = 4
STEPS = 2
FLOOR = 1 << 30
"""Bytes of available memory below which the ranks are stopped (see `launch`)."""


def proc_field(path: str, name: str) -> int:
    """A number from /proc/self/status or /proc/meminfo (kB, returned in bytes) or /proc/self/io (bytes)."""
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            number = int(value.split()[0])
            return number if path.endswith("io") else number * 1024
    raise KeyError(f"{name} not in {path}")


def model_config(overrides: list[str]):
    from megadalle.config import build
    from megadalle.config.compose import compose
    from megadalle.config.model import TransformerConfig

    return build(TransformerConfig, compose("plan", overrides).model, "model")


def run_configs(mode: str, model_overrides: list[str], ema: float | None):
    """(model, trainer, deepspeed) configs of one mode, as the ranks and the plan both see them."""
    from megadalle.config.train import DeepSpeedConfig, TrainerConfig

    trainer = TrainerConfig(steps=STEPS, micro_batch=1, grad_accum=2, warmup_steps=1, checkpoint_every=0,
                            keep_checkpoints=0, log_every=1, ema=ema, precision="fp32")
    return model_config(model_overrides), trainer, DeepSpeedConfig(**MODES[mode])


# ---- one rank ---------------------------------------------------------------------------------------

def worker(opts: dict) -> None:
    import torch

    from megadalle.config.train import LoggerConfig
    from megadalle.train import distributed
    from megadalle.train.callbacks import Callback
    from megadalle.train.loop import RunOptions, train
    from megadalle.train.transformer import FACTORY, TransformerTask

    class RandomTokens(TransformerTask):
        """The Transformer task on random tokens, seeded by step and micro-batch (no data set)."""

        def batches(self, start_step, part):
            step = start_step
            while True:
                for accum in range(part.grad_accum):
                    g = torch.Generator().manual_seed((step * part.grad_accum + accum) * part.dp_world + part.dp_rank)
                    yield {"text": torch.randint(1, self.cfg.text_vocab, (part.micro_batch, self.cfg.text_len), generator=g),
                           "image": torch.randint(0, self.cfg.image_vocab, (part.micro_batch, self.cfg.grid_len), generator=g)}
                step += 1

        def data_identity(self, part):
            return {}

    class Probe(Callback):
        """Reads this process's high-water mark when the first update starts and after the last."""

        def __init__(self):
            self.record = {}

        def start(self, info):
            self.record["construction"] = proc_field("/proc/self/status", "VmHWM")

        def step(self, step, metrics):
            if step == STEPS - 1:
                self.record["two_steps"] = proc_field("/proc/self/status", "VmHWM")
                self.record["wchar_before_save"] = proc_field("/proc/self/io", "wchar")

    env = distributed.detect()
    distributed.init(env)
    baseline = proc_field("/proc/self/status", "VmRSS")
    model, trainer, ds = run_configs(opts["mode"], opts["model"], opts["ema"])
    config = {"model": dataclasses.asdict(model), "deepspeed": dataclasses.asdict(ds), "seed": 0}
    probe = Probe()
    train(RandomTokens(model, None), trainer, ds, LoggerConfig(mode="disabled"),
          RunOptions(run_dir=opts["run_dir"], resume="never", config=config, task_factory=FACTORY), [probe])
    rec = probe.record
    rec.update(baseline=baseline, checkpoint=proc_field("/proc/self/io", "wchar") - rec.pop("wchar_before_save"),
               final=proc_field("/proc/self/status", "VmHWM"))
    Path(opts["out"]).write_text(json.dumps(rec))


# ---- the driver -------------------------------------------------------------------------------------

def launch(opts: dict, work: Path) -> list[dict] | str:
    """Run WORLD ranks of this script's worker (torchrun's variables, gloo on CPU); their records, or
    why they were stopped: should the machine's available memory fall below FLOOR while they run,
    they are killed (a shared machine's other processes must never meet the OOM killer because of us)."""
    from megadalle.train.distributed import free_port

    port = free_port()
    env = dict(os.environ, DS_ACCELERATOR="cpu", WANDB_MODE="disabled", OMP_NUM_THREADS="1",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD))
    procs = []
    for rank in range(WORLD):
        rank_opts = dict(opts, out=str(work / f"rank{rank}.json"))
        log = open(work / f"rank{rank}.log", "w")
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(rank_opts)],
                                      env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)), stdout=log,
                                      stderr=subprocess.STDOUT))
    while any(p.poll() is None for p in procs):
        available = proc_field("/proc/meminfo", "MemAvailable")
        if available < FLOOR:
            for p in procs:
                p.kill()
            return f"stopped: the machine's available memory fell to {available / MIB:,.0f} MiB while it ran"
        time.sleep(0.5)
    codes = [p.returncode for p in procs]
    if any(codes):
        tails = "\n".join(f"--- rank {r} (exit {c})\n{(work / f'rank{r}.log').read_text()[-3000:]}" for r, c in enumerate(codes))
        raise SystemExit(f"scale rehearsal: {opts['mode']} failed: {codes}\n{tails}")
    return [json.loads((work / f"rank{r}.json").read_text()) for r in range(WORLD)]


def peak_of(command: list[str]) -> int:
    """Peak resident bytes of `command` run as a child process (its ru_maxrss)."""
    proc = subprocess.Popen(command, env=dict(os.environ, DS_ACCELERATOR="cpu"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"scale rehearsal: {' '.join(command)} failed: {proc.stderr.read().decode()[-3000:]}")
    return usage.ru_maxrss * 1024


def export_peak(run_dir: Path, work: Path) -> int:
    """`megadalle export`'s peak above a process that imports what it imports."""
    baseline = peak_of([sys.executable, "-c", "import megadalle.cli, megadalle.export, deepspeed, safetensors.torch"])
    return peak_of([sys.executable, "-m", "megadalle", "export", f"run={run_dir}", f"output={work / 'export' / 'model.safetensors'}"]) - baseline


def predict(mode: str, model_overrides: list[str], ema: float | None) -> dict:
    """`plan device=cpu`'s figures for this mode, in bytes (memory above the baseline)."""
    from megadalle import plan as planner
    from megadalle.config.plan import PlanConfig

    model, trainer, ds = run_configs(mode, model_overrides, ema)
    cfg = PlanConfig(gpus=WORLD, device="cpu")
    counts = planner.count_parameters(model)
    settings = planner.settings_for(trainer, ds, cfg)
    layout = planner.layout_for(model, trainer, ds, cfg)
    share = planner.stage_memory(model, counts, layout, settings, 0, "cpu")
    return {"two_steps": planner.memory_per_rank(model, counts, layout, settings, "cpu").total,
            "construction": planner.construction_bytes(model, counts, layout, settings),
            "checkpoint_busiest": planner.checkpoint_bytes(model, counts, layout, settings)[0],
            "checkpoint_total": planner.checkpoint_bytes(model, counts, layout, settings)[1],
            "export": planner.export_bytes(counts), "bf16_copy": 2 * counts.total, "params": counts.total,
            "share_plus_layer": share.weights + share.optimizer + share.ema + 4 * counts.block}


def measure(mode: str, model_overrides: list[str], ema: float | None, root: Path) -> dict:
    """One mode at `model_overrides`, its memory above the same mode's tiny-model run (the baseline:
    interpreter, torch, DeepSpeed's runtime and gloo, which no model-size formula should count).
    With --toy the model is the tiny one itself, and the baseline is each rank's resident memory
    after the imports and the process group."""
    work = root / mode
    work.mkdir(parents=True)
    predicted = predict(mode, model_overrides, ema)
    available = proc_field("/proc/meminfo", "MemAvailable")
    needed = WORLD * (predicted["two_steps"] + 600 * MIB)
    if needed > available:
        return skipped(mode, predicted, f"not run: needs ~{needed / 2**30:.1f} GiB for {WORLD} ranks (plan + 600 MiB "
                                        f"of runtime each), {available / 2**30:.1f} GiB was available")
    ranks = launch({"mode": mode, "model": model_overrides, "ema": ema, "run_dir": str(work / "run")}, work)
    if isinstance(ranks, str):
        return skipped(mode, predicted, ranks)
    if model_overrides == TOY:
        base = [{"construction": r["baseline"], "two_steps": r["baseline"]} for r in ranks]
    else:
        (work / "baseline").mkdir()
        base = launch({"mode": mode, "model": TOY, "ema": ema, "run_dir": str(work / "baseline" / "run")}, work / "baseline")
        if isinstance(base, str):
            return skipped(mode, predicted, f"baseline {base}")
    ckpt_dir = next((work / "run" / "checkpoints").glob("step_*"))
    measured = {
        "baseline": [max(b["construction"], b["two_steps"]) for b in base],
        "construction": [r["construction"] - b["construction"] for r, b in zip(ranks, base)],
        "two_steps": [r["two_steps"] - b["two_steps"] for r, b in zip(ranks, base)],
        "checkpoint": [r["checkpoint"] for r in ranks],
        "checkpoint_total": sum(f.stat().st_size for f in ckpt_dir.rglob("*") if f.is_file()),
        "export": export_peak(work / "run", work),
    }
    return {"mode": mode, "measured": measured, "predicted": predicted}


def skipped(mode: str, predicted: dict, reason: str) -> dict:
    print(f"[rehearsal] {mode}: {reason}", flush=True)
    return {"mode": mode, "skipped": reason, "predicted": predicted}


def targets(rows: dict) -> dict:
    """Issue 10's targets, evaluated (reported, never asserted)."""
    rows = {mode: row for mode, row in rows.items() if "measured" in row}
    out = {}
    if "zero1" in rows and "zero3" in rows:
        ratio = max(rows["zero3"]["measured"]["two_steps"]) / max(rows["zero1"]["measured"]["two_steps"])
        out["zero3_over_zero1"] = {"value": ratio, "target": "<= 0.5", "met": ratio <= 0.5}
    for mode, row in rows.items():
        m, p = row["measured"], row["predicted"]
        construction = max(m["construction"]) / p["share_plus_layer"]
        error = max(m["two_steps"]) / p["two_steps"] - 1
        export = m["export"] / p["bf16_copy"]
        out[mode] = {"construction_over_share_plus_layer": {"value": construction, "target": "<= 1", "met": construction <= 1},
                     "two_steps_vs_plan": {"value": error, "target": "within 20%", "met": abs(error) <= 0.2},
                     "export_over_bf16_copy": {"value": export, "target": "<= 1.2", "met": export <= 1.2}}
    return out


def table(rows: dict) -> str:
    def mib(x):
        return f"{x / MIB:,.0f}"

    lines = ["| mode | construction MiB (plan) | after 2 steps MiB (plan) | vs plan | checkpoint MiB busiest rank / all (plan) "
             "| export MiB (plan; 1 bf16 copy) |", "|---|---|---|---|---|---|"]
    for mode, row in rows.items():
        m, p = row.get("measured"), row["predicted"]
        if m is None:
            lines.append(f"| {mode} | {row['skipped']} (plan: {mib(p['construction'])}) | (plan: {mib(p['two_steps'])}) | | | |")
            continue
        lines.append(
            f"| {mode} | {mib(max(m['construction']))} ({mib(p['construction'])}) | {mib(max(m['two_steps']))} "
            f"({mib(p['two_steps'])}) | {max(m['two_steps']) / p['two_steps'] - 1:+.0%} | {mib(max(m['checkpoint']))} / "
            f"{mib(m['checkpoint_total'])} ({mib(p['checkpoint_busiest'])} / {mib(p['checkpoint_total'])}) | "
            f"{mib(m['export'])} ({mib(p['export'])}; {mib(p['bf16_copy'])}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--toy", action="store_true", help="the tiny model (seconds; what the test runs)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--ema", type=float, default=None, help="trainer.ema (e.g. 0.99; needs an EMA that shards for zero3)")
    parser.add_argument("--out", default="benchmarks/scale_rehearsal.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"--modes: unknown {unknown}; expected a subset of {list(MODES)}")
    overrides = TOY if args.toy else REAL
    rows = {}
    with tempfile.TemporaryDirectory(prefix="scale-rehearsal-") as tmp:
        for mode in modes:
            print(f"[rehearsal] {mode}: {WORLD} ranks, {STEPS} updates, then export", flush=True)
            rows[mode] = measure(mode, overrides, args.ema, Path(tmp))
    result = {"model": overrides, "world": WORLD, "steps": STEPS, "ema": args.ema, "rows": rows, "targets": targets(rows),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "load_average": os.getloadavg(), "mem_total_gib": proc_field("/proc/meminfo", "MemTotal") / 2**30, "cpus": os.cpu_count()}
    print(table(rows))
    print(json.dumps(result["targets"], indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
