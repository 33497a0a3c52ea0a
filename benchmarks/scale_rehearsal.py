"""The 12B's width on 4 CPU ranks: per-rank memory, checkpoint and export measured beside `plan`.

    python benchmarks/scale_rehearsal.py                       # d_model 3968, 62 heads, real vocabularies
    python benchmarks/scale_rehearsal.py --toy --modes zero1,pipe --out /tmp/toy.json   # what CI runs
    python benchmarks/scale_rehearsal.py --width 1984 --out half.json  # the same layer at half the width
    python benchmarks/scale_rehearsal.py --width 1024 --layers 8 --modes zero1,zero3,pipe4 --out 151m.json
                                                      # issue 10's ~151M model: ZeRO-3 and pipe4 against ZeRO-1

Each mode (conf/deepspeed's zero1, zero2, zero3 with persistence threshold 0 so every tensor is
partitioned, pipe: 2 stages x 2 data-parallel, and pipe4: 4 stages, which needs --layers >= 4) trains two updates through the real trainer
(megadalle.train.loop: engine, EMA, checkpoint) on DS_ACCELERATOR=cpu, gloo, fp32, on data=synthetic. Every rank records, from its own /proc/self/status and /proc/self/io:
- baseline: the same mode's peaks with the tiny model (interpreter, torch, DeepSpeed, gloo), as
  issue 10 measured; with --toy, resident memory after the imports and the process group;
- construction: the high-water mark (VmHWM) when the first update starts (model built, deepspeed.initialize done);
- two steps: VmHWM after the second update;
- checkpoint: bytes it wrote (wchar) while saving the checkpoint at step 2.
Then `megadalle export` runs in its own process and its peak (ru_maxrss) is taken above the peak of a
process that only imports the same modules. Every figure stands beside `megadalle plan device=cpu`'s
prediction for the same config (memory above the baseline), and the targets of issue 10 are
reported, not asserted.

The ranks run with glibc's mmap threshold fixed at 1 MiB (MALLOC_MMAP_THRESHOLD_), so a freed tensor's
pages go back to the system and the high-water marks count what the ranks hold, which is what `plan`
models. By default glibc raises that threshold after the first large free (up to 32 MiB), and from
then on keeps freed blocks below it in its heap: ZeRO-3, which gathers and frees every block's
tensors at each use, then looks 25-40% larger than what it holds once those tensors fall under 32 MiB
(d_model 1024: 12.6 MB each). `--glibc-default` measures with glibc's own behaviour instead. Either way
the ranks turn the trainer's `keep_freed_memory` off, so glibc runs as the environment says.
Modes run one after another; before each, the memory the plan predicts for
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

from arguments import default_out

MIB = 2 ** 20
MMAP_THRESHOLD = str(MIB)
"""glibc's MALLOC_MMAP_THRESHOLD_ for the ranks (see the module docstring)."""
GLIBC_DEFAULT = "glibc default"
"""The allocator setting recorded for --glibc-default runs, and assumed for files that record none."""
MODES = {
    "zero1": ["deepspeed=zero1"],
    "zero2": ["deepspeed=zero2"],
    "zero3": ["deepspeed=zero3", "+deepspeed.extra={zero_optimization: {stage3_param_persistence_threshold: 0}}"],
    "pipe": ["deepspeed=pipe", "deepspeed.partition_method=uniform"],
    "pipe4": ["deepspeed=pipe", "deepspeed.pipeline_stages=4"],
}
"""conf/deepspeed groups as users run them; ZeRO-3 partitions every tensor (the real model's are all
above DeepSpeed's default threshold of 1e5 elements except biases and norms). The 2-stage pipeline cuts the layers
uniformly (embeddings and the block | the head, the layout the 2026-12-01 rows measured): type:Block, the default,
leaves the second stage of a one-block model without a block, which plan and train refuse."""
DEFAULT_MODES = ["zero1", "zero2", "zero3", "pipe"]
"""pipe4 is left out by default: four stages need at least four blocks (--layers)."""
AGAINST_ZERO1 = ("zero3", "pipe4")
"""Issue 10: ZeRO-3 and a 4-stage pipeline each hold at most half of ZeRO-1's memory per rank."""
RUN = ["data=synthetic", "logger=none", "trainer.steps=2", "trainer.micro_batch=1", "trainer.grad_accum=2",
       "trainer.warmup_steps=1", "trainer.checkpoint_every=0", "trainer.keep_checkpoints=0", "trainer.log_every=1",
       "trainer.precision=fp32", "resume=never"]
REAL = ["model=12b", "model.n_layers=1", "model.attention_pattern=[row]", "model.text_len=64", "model.grid_size=8"]
"""The 12B's width and vocabularies (d_model 3968, 62 heads x 64, text 16384, image 8192), one block,
64 text + 8x8 image positions: ~385M parameters, so 4 fp32 ranks fit in a 24 GB machine."""
TOY = ["model=tiny"]
WORLD = 4
STEPS = 2
FLOOR = 1 << 30
"""Bytes of available memory below which the ranks are stopped (see `launch`)."""
RUNTIME = 500 * MIB
"""Resident memory of a rank before its model (interpreter, torch, DeepSpeed, gloo; ~510 MiB measured)."""


def proc_field(path: str, name: str) -> int:
    """A number from /proc/self/status or /proc/meminfo (kB, returned in bytes) or /proc/self/io (bytes)."""
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            number = int(value.split()[0])
            return number if path.endswith("io") else number * 1024
    raise KeyError(f"{name} not in {path}")


def run_config(mode: str, model_overrides: list[str], ema: float | None, run_dir: str | None = None):
    """The composed `megadalle train` config of one mode (random tokens from data=synthetic)."""
    from megadalle.config.compose import compose

    ema_override = f"trainer.ema={ema if ema is not None else 'null'}"
    return compose("train", [*MODES[mode], *model_overrides, *RUN, ema_override, f"run_dir={run_dir}" if run_dir
                             else "run_dir=null"])


def typed(cfg):
    """(model, trainer, deepspeed) dataclasses of a composed config, as the ranks and the plan see them."""
    from megadalle.config import build
    from megadalle.config.model import TransformerConfig
    from megadalle.config.train import DeepSpeedConfig, TrainerConfig

    return (build(TransformerConfig, cfg.model, "model"), build(TrainerConfig, cfg.trainer, "trainer"),
            build(DeepSpeedConfig, cfg.deepspeed, "deepspeed"))


# ---- one rank ---------------------------------------------------------------------------------------

def worker(opts: dict) -> None:
    from omegaconf import OmegaConf

    from megadalle.config import build
    from megadalle.config.train import LoggerConfig
    from megadalle.train import distributed
    from megadalle.train.callbacks import Callback
    from megadalle.train.loop import RunOptions, train
    from megadalle.train.transformer import FACTORY, task_from_config

    class Probe(Callback):
        """Reads this process's high-water mark when the first update starts and after the last, and
        writes what it has each time (a run stopped half-way still tells its construction peak)."""

        def __init__(self, baseline: int):
            self.record = {"baseline": baseline}

        def start(self, info):
            self.record["construction"] = proc_field("/proc/self/status", "VmHWM")
            self.save()

        def step(self, step, metrics):
            if step == STEPS - 1:
                self.record["two_steps"] = proc_field("/proc/self/status", "VmHWM")
                self.record["wchar_before_save"] = proc_field("/proc/self/io", "wchar")
                self.save()

        def save(self):
            Path(opts["out"]).write_text(json.dumps(self.record))

    distributed.init(distributed.detect())
    probe = Probe(proc_field("/proc/self/status", "VmRSS"))
    cfg = run_config(opts["mode"], opts["model"], opts["ema"], opts["run_dir"])
    _, trainer, ds = typed(cfg)
    trainer = dataclasses.replace(trainer, keep_freed_memory=False)  # glibc as the environment sets it (see above)
    run = RunOptions(run_dir=cfg.run_dir, resume="never", config=OmegaConf.to_container(cfg, resolve=True),
                     task_factory=FACTORY)
    train(task_from_config(cfg), trainer, ds, build(LoggerConfig, cfg.logger, "logger"), run, [probe])
    rec = probe.record
    rec.update(checkpoint=proc_field("/proc/self/io", "wchar") - rec.pop("wchar_before_save"),
               final=proc_field("/proc/self/status", "VmHWM"))
    probe.save()


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
        rank = next(r for r, c in enumerate(codes) if c)
        lines = (work / f"rank{rank}.log").read_text(errors="replace").strip().splitlines()
        return f"failed: rank {rank} exit {codes[rank]}: {lines[-1] if lines else 'no output'}"
    return [json.loads((work / f"rank{r}.json").read_text()) for r in range(WORLD)]


FRESH_CHILD = """import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""
"""Runs its arguments as its own child and prints that child's ru_maxrss (KiB). Linux starts a process's maxrss at
exec from the high-water mark of the memory it replaces, which for a child spawned by this driver (vfork) is the
driver's own, torch and DeepSpeed imported and plan run: every figure read ~155 MiB high, and an export's peak
above the import baseline as much too low. Forked from this small interpreter, the child starts from its mark."""


def peak_of(command: list[str]) -> int:
    """Peak resident bytes of `command` run as a process of its own (FRESH_CHILD)."""
    proc = subprocess.run([sys.executable, "-c", FRESH_CHILD, *command], env=dict(os.environ, DS_ACCELERATOR="cpu"),
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"scale rehearsal: {' '.join(command)} failed: {proc.stderr[-3000:]}")
    return int(proc.stdout.strip().splitlines()[-1]) * 1024


def export_peak(run_dir: Path, work: Path) -> int:
    """`megadalle export`'s peak above a process that imports what it imports."""
    baseline = peak_of([sys.executable, "-c", "import megadalle.cli, megadalle.export, deepspeed, safetensors.torch"])
    return peak_of([sys.executable, "-m", "megadalle", "export", f"run={run_dir}", f"output={work / 'export' / 'model.safetensors'}"]) - baseline


def predict(mode: str, model_overrides: list[str], ema: float | None) -> dict:
    """`plan device=cpu`'s figures for this mode, in bytes (memory above the baseline)."""
    from megadalle import plan as planner
    from megadalle.config.plan import PlanConfig

    model, trainer, ds = typed(run_config(mode, model_overrides, ema))
    cfg = PlanConfig(gpus=WORLD, device="cpu")
    counts = planner.count_parameters(model)
    settings = planner.settings_for(trainer, ds, cfg, counts)
    layout = planner.layout_for(model, trainer, ds, cfg)
    share = planner.stage_memory(model, counts, layout, settings, 0, "cpu")
    construction = planner.construction_bytes(model, counts, layout, settings, "cpu")
    stages = [planner.stage_memory(model, counts, layout, settings, s, "cpu").total for s in range(layout.pipeline)]
    return {"two_steps": planner.memory_per_rank(model, counts, layout, settings, "cpu").total,
            "all_ranks": layout.data_parallel * sum(max(total, construction if s == 0 else 0) + RUNTIME
                                                    for s, total in enumerate(stages)),
            "construction": construction,
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
    needed = predicted["all_ranks"]  # each rank's own stage: a pipeline's later stages hold less
    if needed > available:
        return skipped(mode, predicted, f"not run: needs ~{needed / 2**30:.1f} GiB for {WORLD} ranks (plan + {RUNTIME // MIB} MiB "
                                        f"of runtime each), {available / 2**30:.1f} GiB was available")
    ranks = launch({"mode": mode, "model": model_overrides, "ema": ema, "run_dir": str(work / "run")}, work)
    if isinstance(ranks, str):
        return skipped(mode, predicted, ranks, work)
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


def skipped(mode: str, predicted: dict, reason: str, work: Path | None = None) -> dict:
    """A row for a mode that did not finish, with what its ranks recorded before it stopped (bytes,
    absolute: `baseline` is each rank's resident memory after the imports and the process group)."""
    print(f"[rehearsal] {mode}: {reason}", flush=True)
    files = sorted(work.glob("rank*.json")) if work is not None else []
    return {"mode": mode, "skipped": reason, "predicted": predicted, "partial": [json.loads(f.read_text()) for f in files]}


def targets(rows: dict) -> dict:
    """Issue 10's targets, evaluated (reported, never asserted)."""
    rows = {mode: row for mode, row in rows.items() if "measured" in row}
    out = {}
    for mode in AGAINST_ZERO1:
        if "zero1" in rows and mode in rows:
            ratio = max(rows[mode]["measured"]["two_steps"]) / max(rows["zero1"]["measured"]["two_steps"])
            out[f"{mode}_over_zero1"] = {"value": ratio, "target": "<= 0.5", "met": ratio <= 0.5}
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


def earlier_rows(out: Path, overrides: list[str], allocator: str | None) -> dict:
    """Rows an earlier run of the same size and allocator setting wrote to `out` (None: any allocator):
    measuring some modes again keeps the others, so a long rehearsal can be run a few modes at a time.
    Files from before the allocator was recorded were measured with glibc's default."""
    if not out.is_file():
        return {}
    earlier = json.loads(out.read_text())
    same = earlier.get("model") == overrides and allocator in (None, earlier.get("allocator", GLIBC_DEFAULT))
    return earlier["rows"] if same else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--toy", action="store_true", help="the tiny model (seconds; what the test runs)")
    parser.add_argument("--width", type=int, default=None,
                        help="d_model instead of the 12B's 3968 (heads of 64), to check plan at another size")
    parser.add_argument("--layers", type=int, default=1, help="Transformer blocks (default 1; pipe4 needs >= 4)")
    parser.add_argument("--set", action="append", default=[], metavar="OVERRIDE",
                        help="a further `megadalle train` override for every mode, e.g. deepspeed.reduce_bucket_size=5e6 "
                             "(repeatable; part of the rows' identity in --out)")
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--ema", type=float, default=None, help="trainer.ema (e.g. 0.99; needs an EMA that shards for zero3)")
    parser.add_argument("--out", default=default_out("scale_rehearsal"),
                        help="JSON written after every mode; rows of other modes already in it are kept")
    parser.add_argument("--replan", action="store_true", help="measure nothing: predict again for the rows in --out")
    parser.add_argument("--glibc-default", action="store_true",
                        help="leave glibc's dynamic mmap threshold on: peaks include freed memory glibc keeps")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"--modes: unknown {unknown}; expected a subset of {list(MODES)}")
    if "pipe4" in modes and (args.toy or args.layers < 4):
        parser.error(f"--modes pipe4: four pipeline stages need --layers >= 4 (got {args.layers}{', --toy' if args.toy else ''})")
    overrides = TOY if args.toy else REAL
    if not args.toy:
        if args.width and args.width % 64:
            parser.error(f"--width={args.width}: must be a multiple of the head width 64")
        if args.width:
            overrides = [*overrides, f"model.d_model={args.width}", f"model.n_heads={args.width // 64}"]
        if args.layers != 1:
            overrides = [*overrides, f"model.n_layers={args.layers}"]
    overrides = [*overrides, *args.set]
    allocator = GLIBC_DEFAULT if args.glibc_default else f"MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}"
    if not args.glibc_default:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = MMAP_THRESHOLD  # inherited by the ranks and the export
    if args.replan and not Path(args.out).is_file():
        parser.error(f"--replan predicts again for an earlier run's rows: give its JSON as --out ({args.out} "
                     "does not exist; a run without --out writes a new file)")
    rows = earlier_rows(Path(args.out), overrides, None if args.replan else allocator)
    held = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    if not rows and (args.replan or held.get("rows")):  # never drop what an earlier run measured
        parser.error(f"--out {args.out} holds no rows of this size and allocator ({' '.join(overrides)}; {allocator}) "
                     f"but rows of {' '.join(held.get('model', []))} ({held.get('allocator', GLIBC_DEFAULT)}): "
                     "give the --width, --layers, --set and --glibc-default they were measured with, or another --out")
    if args.replan:  # plan changed, the measurements did not: predict again beside them
        for mode in rows:
            rows[mode]["predicted"] = predict(mode, overrides, args.ema)
        modes = []
    result = {"targets": targets(rows)}  # what is printed when no mode is measured again
    with tempfile.TemporaryDirectory(prefix="scale-rehearsal-") as tmp:
        for mode in modes:
            print(f"[rehearsal] {mode}: {WORLD} ranks, {STEPS} updates, then export", flush=True)
            row = dict(measure(mode, overrides, args.ema, Path(tmp)), load_average=os.getloadavg(),
                       date=datetime.datetime.now(datetime.timezone.utc).isoformat("T", "seconds"))
            if "measured" in rows.get(mode, {}) and "measured" not in row:
                print(f"[rehearsal] {mode}: {row.get('skipped', 'not measured')}; the earlier measurement of "
                      f"{rows[mode]['date']} is kept", flush=True)
                continue
            rows[mode] = row
            result = {"model": overrides, "allocator": allocator, "world": WORLD, "steps": STEPS, "ema": args.ema, "rows": rows,
                      "targets": targets(rows), "date": datetime.datetime.now(datetime.timezone.utc).isoformat("T", "seconds"),
                      "load_average": os.getloadavg(), "mem_total_gib": proc_field("/proc/meminfo", "MemTotal") / 2**30,
                      "cpus": os.cpu_count()}
            Path(args.out).write_text(json.dumps(result, indent=1))  # after every mode: a long run keeps what it measured
    if args.replan:
        result = dict(json.loads(Path(args.out).read_text()), rows=rows, targets=targets(rows))
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(table(rows))
    print(json.dumps(result["targets"], indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
