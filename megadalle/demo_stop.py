"""How `megadalle demo` stops: Ctrl-C, TERM or USR1 end it in any stage with STOPPED_EXIT (75) and one line that
says what it kept, and rerunning the same command continues from there (demo_done.py skips the data stages an
earlier run finished, the training stages resume from their checkpoints).

A training stage takes the signals over while it trains (signals.run_flag: it saves a checkpoint and stops); the
signal its flag took is kept for the stop line (signals.last_stop).
Around it the demo's own handler raises `Interrupted` (interrupted.py) at once, as Ctrl-C raises KeyboardInterrupt:
its other stages publish what they write atomically (prepare's shards, encode's, the weights, the grids) or record
it as done last (demo_done.py), so a stop leaves nothing half-written that a rerun would take for finished. Before
the demo's run the CLI holds TERM and USR1 from its first line (cli.stop_signals), as it does for a training verb;
`interruptible` takes that flag over, so a signal that came during the imports stops the demo before its first
stage.
"""
from __future__ import annotations

from pathlib import Path

from megadalle.interrupted import Interrupted, name_of
from megadalle.train.signals import STOP_SIGNALS, last_stop, raising_at_once


class DemoStopped(Exception):
    """A training stage that a stop signal ended before its last update: it saved a checkpoint (or, stopped in its
    start-up, kept the one it had), and the demo stops there rather than go on without its weights. `signum` is the
    signal its trainer's flag took (signals.last_stop), which the stop line names."""

    def __init__(self, stage: str, signum: int | None):
        super().__init__(stage)
        self.stage, self.signum = stage, signum

    @property
    def how(self) -> str:
        """The signal as a stop line names it; "a signal" where the stage's flag took none."""
        return name_of(self.signum) if self.signum is not None else "a signal"


def finished(stage: str, done: bool) -> None:
    """DemoStopped unless the training stage `stage` finished, naming the signal its trainer took."""
    if not done:
        raise DemoStopped(stage, last_stop())


def interruptible():
    """The demo's handler of Ctrl-C, TERM and USR1 for its whole run, raising `Interrupted`."""
    return raising_at_once(STOP_SIGNALS, Interrupted)


def stop_line(stage: str | None, how: str, done: list[str], run_dir: Path | None) -> str:
    """The demo's one line when a stop signal ended it in `stage` (None: outside any, before its first or between
    two: while train_models imports, or writing the summary after the last), `how` naming the signal: the stages
    it finished, the checkpoint a rerun resumes `stage` from, and that rerunning continues."""
    from megadalle.train.rundir import resume_step

    where = (f"in its {stage} stage" if stage else f"between stages, after {done[-1]}" if done
             else "before its first stage")
    kept = [f"finished stages: {', '.join(done)}"] if done else ["no finished stage"]
    if run_dir is not None:
        step = resume_step(run_dir, "auto")
        kept.append(f"{stage}'s checkpoint at step {step}" if step is not None else f"no checkpoint of {stage} yet")
    return (f"megadalle demo: stopped by {how} {where}; kept {' and '.join(kept)}; rerun the same command to "
            "continue from there")
