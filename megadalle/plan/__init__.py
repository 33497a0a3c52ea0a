"""`megadalle plan`: will this config train on these GPUs, how long is a step, and what layout is best?

A package because the prediction has several parts a reader looks for separately, one per module,
each importing only those listed above it:

    precision.py   bytes per element of each training precision (bf16, fp32), and GB
    counts.py      parameters of the model (exact, from a meta-device build) and of each pipeline stage
    layout.py      the parallel layout: from `train`'s config, to `train` overrides, in words
    settings.py    what besides the layout decides memory: precision, EMA, DeepSpeed's buffer sizes
    memory.py      peak bytes per rank by owner (what is counted, and why), while building, the budget
    checkpoint.py  checkpoint and export sizes, and the Slurm USR1 lead time they need
    timing.py      step time: compute at an assumed MFU plus the communication left exposed
    suggest.py     the fastest layout that fits
    report.py      the verb: the report printed for a config

The names below are those its callers (tests/unit/test_plan.py, benchmarks/scale_rehearsal.py) use.
"""
from megadalle.plan.checkpoint import checkpoint_bytes, export_bytes, usr1_lead_seconds
from megadalle.plan.counts import Counts, count_parameters, stage_parameters, stage_span
from megadalle.plan.layout import Layout, PlanError, launch_overrides, layout_for
from megadalle.plan.memory import budget, construction_bytes, memory_per_rank, stage_memory
from megadalle.plan.precision import BF16, FP32, GB
from megadalle.plan.settings import Settings, settings_for
from megadalle.plan.suggest import suggest
from megadalle.plan.timing import ring_seconds, step_time

__all__ = ["checkpoint_bytes", "export_bytes", "usr1_lead_seconds", "Counts", "count_parameters", "stage_parameters",
           "stage_span", "Layout", "PlanError", "launch_overrides", "layout_for", "budget", "construction_bytes",
           "memory_per_rank", "stage_memory",
           "BF16", "FP32", "GB", "Settings", "settings_for", "suggest", "ring_seconds", "step_time"]
