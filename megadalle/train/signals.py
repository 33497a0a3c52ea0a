"""SIGUSR1 / SIGTERM / SIGINT ask for a checkpoint and a clean stop instead of killing the run.

Slurm sends USR1 ahead of the time limit (`--signal=B:USR1@120`, forwarded to the tasks by the
batch script) and TERM on preemption; Ctrl-C sends INT. The handler only sets a flag; the loop
checks it between updates on all ranks together (one rank may get the signal before the others),
saves a checkpoint and returns, so rerunning the same command resumes. A second Ctrl-C while the
run finishes its update and saves, or a Ctrl-C after a TERM, is the user insisting: it raises KeyboardInterrupt as
usual (INSISTED_AFTER).

A scheduler's signal can come before the loop: a preemption while the process imports, indexes its
data, builds the engine or loads a 12B checkpoint (minutes). A training verb therefore takes USR1 and
TERM at its process's start (`taken_at_start`), and the run's start-up stops every rank together at its
next stage with nothing to save (loop.Trainer), instead of dying of the default action (exit 143, which
the batch script does not requeue). Ctrl-C before the loop still interrupts at once: there is nothing to save.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
LATE_COPIES = (signal.SIGUSR1, signal.SIGTERM)
INSISTED_AFTER = (signal.SIGINT, signal.SIGTERM)
"""A Ctrl-C after these is the user insisting: after a Ctrl-C, and after a TERM, which is what launch/train.sh makes
of the first Ctrl-C it passes on (the ranks take TERM before their loop, INT not). A scheduler's USR1 is a warning
the user may not have seen: a Ctrl-C after it still asks for the checkpoint under way."""
LATE_WINDOW_S = 120.0
"""How long after a stop a copy of its signal is taken for a late one: longer than a forwarder or scheduler takes
to reach every rank, short enough that a later, deliberate TERM does what it did before the run."""


class StopFlag:
    def __init__(self):
        self.received: int | None = None
        self.insisted = False
        """A Ctrl-C now aborts: one of INSISTED_AFTER came, whatever came after it (a scheduler's USR1)."""
        self.prefix = "[train]"
        """The running verb's prefix, which the Ctrl-C line starts with (`install`)."""
        self._previous = {}
        self._pid = os.getpid()

    def install(self, signals: tuple[int, ...] = STOP_SIGNALS, prefix: str = "[train]") -> "StopFlag":
        """Take over `signals` (only possible from the main thread; elsewhere a no-op), saying Ctrl-C's line under
        `prefix` (the loop's, `[<verb>]`). Installing a signal the flag holds already keeps the handler it gives
        back."""
        self.prefix = prefix
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in signals:
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)
        return self

    def uninstall(self, stopped: bool = False) -> None:
        """Give the stop signals back. After a run that `stopped` for a signal (on any rank), a copy of TERM or
        USR1 arriving in the next LATE_WINDOW_S is ignored (`LateCopies`) until `forget_late_copies`: the ranks
        stop together when one is signalled, so another rank's copy can arrive late (a second node's forwarder, a
        scheduler signalling each process), after the checkpoint, and it killed the process on its way out (exit
        -15, and the launcher then reported a failure). Ctrl-C, which the loop holds too, has its first copy in that
        window ignored (`LateCopies.once`): a signal and a Ctrl-C sent together (a scheduler's USR1 and TERM, then a
        user's Ctrl-C) turned a saved checkpoint's exit 75 into "interrupted" (130) or a KeyboardInterrupt
        traceback from an exit handler."""
        global _stopped_here
        for sig, handler in self._previous.items():
            late = stopped and (sig in LATE_COPIES or sig == signal.SIGINT)
            signal.signal(sig, LateCopies(sig, handler, self._pid, once=sig == signal.SIGINT) if late else handler)
        self._previous.clear()
        _stopped_here = _stopped_here or stopped

    def _handle(self, signum, frame) -> None:
        if left_to_parent(self._pid, signum):
            return
        if signum == signal.SIGINT:
            if self.insisted:
                raise KeyboardInterrupt
            print(f"{self.prefix} Ctrl-C: saving a checkpoint after this update, then stopping (Ctrl-C again to abort "
                  "without saving)", file=sys.stderr, flush=True)
        global _last_stop
        self.received = _last_stop = signum
        self.insisted = self.insisted or signum in INSISTED_AFTER

    @property
    def set(self) -> bool:
        return self.received is not None


def stop_requested() -> bool:
    """Whether a stop signal reached the flag now holding TERM (a training verb's, from its start to its end):
    long start-up work outside the trainer's stages (indexing a data folder) asks it, to stop at once."""
    flag = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return isinstance(flag, StopFlag) and flag.set


_stopped_here = False
"""Whether a run in this process stopped for a signal: its exit ignores late copies (`ignore_late_copies`)."""
_last_stop: int | None = None
"""The stop signal the latest run's flag took (`last_stop`)."""


def last_stop() -> int | None:
    """The stop signal the flag of this process's latest run took (None before one did): a training stage's flag
    keeps its signal to itself, and the demo's stop line names it from here. Each run's flag starts it afresh
    (`run_flag`)."""
    return _last_stop


class LateCopies:
    """The handler of a stop signal after a stop: ignores the copies that arrive late, then steps aside. Never
    SIG_IGN: that outlives the run in every process the caller starts later (a bash script cannot even trap a
    signal ignored at its start; a worker pool could no longer be terminated). Exec'd children get the default
    action; a forked child the default too, through this handler (a signal that arrives while the child is still
    in the fork can be lost, which is why an in-process `train` gives the handlers back with `forget_late_copies`; a
    verb's command keeps them to its exit, starting nothing more).

    With `once` (Ctrl-C) only the first copy is ignored and the handler then steps aside: a second Ctrl-C is the
    user insisting, as during the run (StopFlag)."""

    def __init__(self, sig: int, previous, pid: int, once: bool = False):
        self.sig, self.pid, self.once = sig, pid, once
        self.previous = signal.SIG_DFL if previous is None else previous  # None: a handler set outside Python
        self.until = time.monotonic() + LATE_WINDOW_S

    def __call__(self, signum, frame) -> None:
        if os.getpid() != self.pid:
            default_action(signum)
        elif time.monotonic() >= self.until:
            signal.signal(signum, self.previous)
            os.kill(os.getpid(), signum)  # delivered again, to what it was before the run
        elif self.once:
            signal.signal(signum, self.previous)


def left_to_parent(pid: int, signum: int) -> bool:
    """In a forked child of the process `pid` (a worker pool, a DataLoader worker before its own handlers), which
    inherited its handler: True, once TERM has ended the child as it must (Pool.terminate, Process.terminate), for
    every other signal the parent decides on (Ctrl-C reaches the whole process group, USR1 the whole Slurm step).
    False in the process `pid` itself."""
    if os.getpid() == pid:
        return False
    if signum == signal.SIGTERM:
        default_action(signum)
    return True


def default_action(signum: int) -> None:
    """Take `signum` with its default action (a forked child's, which inherited the trainer's handler)."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


_at_start: StopFlag | None = None
"""The flag a training verb took at its start (`taken_at_start`), until its run takes it over (`run_flag`)."""
_in_command = False
"""Whether a training verb's command holds the stop signals (`taken_at_start`), to its end."""


@contextmanager
def taken_at_start(to_exit: bool = False) -> Iterator[None]:
    """Hold USR1 and TERM from here to the run's start (a training verb's whole command, from the CLI's first
    line): a signal that comes meanwhile is kept in the flag the run takes over (`run_flag`), which stops it at
    its next stage, before its first update. Ctrl-C interrupts the start-up at once, as Python's own handler would,
    but is not lost where Python ignores exceptions (`raising`): in a start-up of imports, importlib's module-lock
    weakref callbacks are such a place, and a demo stopped there ran to its end. The signals are as they were when it
    ends. Inside another `taken_at_start` (a plain command's, around a sweep job's) it changes nothing. After a run a
    signal stopped, its late copies are ignored until it ends (`forget_late_copies`), and with `to_exit` (the
    process's own command, whose end is its exit) from then on (`ignore_late_copies`), with no moment between for a
    handler from before the run to take one: a Ctrl-C there turned a checkpointed stop's 75 into "interrupted" (130),
    a TERM killed the process (-15)."""
    global _at_start, _in_command
    if _at_start is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    with raising((signal.SIGINT,), lambda signum: KeyboardInterrupt()):  # first: TERM held means Ctrl-C is too
        flag = _at_start = StopFlag().install(LATE_COPIES)
        _in_command = True
        try:
            yield
        finally:
            if to_exit:
                ignore_late_copies()  # first: what follows gives back nothing once they are ignored
            if _at_start is flag:
                _at_start = None
            _in_command = False
            flag.uninstall()  # gives nothing back once a run has taken the flag over: the run has
            forget_late_copies()


def run_flag() -> StopFlag:
    """A run's stop flag, holding USR1 and TERM: the one its verb took at its start, with what it received since
    (`taken_at_start`), else a new one. The loop adds SIGINT when its first update begins."""
    global _at_start, _last_stop
    flag, _at_start = _at_start, None
    flag = flag if flag is not None else StopFlag().install(LATE_COPIES)
    _last_stop = flag.received
    return flag


@contextmanager
def raising_at_once(signals: tuple[int, ...], error: Callable[[int], BaseException]) -> Iterator[None]:
    """Within the block each of `signals` raises `error(signum)` wherever the process is, as Ctrl-C raises
    KeyboardInterrupt (`raising`): the stop of a command with no update to finish first (sampling, the demo around its
    training stages), whose clean-up then runs. It takes over the flag held since the command's start
    (`run_flag`): a signal that came meanwhile raises at once. Outside the main thread (where no handler can be set)
    it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = run_flag()
    try:
        with raising(signals, error):
            if held.set:
                raise error(held.received)
            yield
    finally:
        held.uninstall()


@contextmanager
def raising(signals: tuple[int, ...], error: Callable[[int], BaseException]) -> Iterator[None]:
    """Within the block (entered from the main thread) each of `signals` raises `error(signum)` wherever the process
    is. A forked child (a worker pool) still ends on TERM and leaves the rest to its parent. The handlers after it
    are `handled_by`'s.

    Python runs a handler at the main thread's next bytecode, wherever it is: where that is code whose exceptions
    Python ignores (fork's clean-up, a `__del__`, a weakref callback), the raise was lost, printed as "Exception
    ignored", and the run went on as if never stopped. Such a raise reaches `sys.unraisablehook`, which has the
    signal sent again a moment later, from another thread: sent from the hook, its handler would run in the hook,
    whose own exceptions Python ignores too. One the block ends before is raised at its end: sent after it, it met
    the handler from before the block (TERM's default killed the process)."""
    pid, lock, lost = os.getpid(), threading.Lock(), []

    def handle(signum, frame):
        if not left_to_parent(pid, signum):
            stop = error(signum)
            stop.stop_signal = signum  # what `ignored` sends again
            raise stop

    def ignored(unraisable):
        signum = getattr(unraisable.exc_value, "stop_signal", None)
        if signum is None:
            hook(unraisable)
        else:
            with lock:
                lost[:] = [signum]
            threading.Timer(RESEND_AFTER_S, send_again).start()

    def send_again():
        with lock:  # held while sent: the block's end waits for it, and the handler raises there at the latest
            if lost:
                os.kill(pid, lost.pop())

    def still_lost() -> int | None:
        with lock:
            return lost.pop() if lost else None

    hook = sys.unraisablehook
    try:
        sys.unraisablehook = ignored
        with handled_by(signals, handle):
            try:
                yield
            except BaseException:
                still_lost()  # the block's own exception goes on, a stop's included
                raise
            signum = still_lost()  # while the handler holds: a resend under way raises here at the latest
            if signum is not None:
                raise error(signum)
    finally:
        sys.unraisablehook = hook


@contextmanager
def handled_by(signals: tuple[int, ...], handler) -> Iterator[None]:
    """Within the block `handler` takes each of `signals` (from the main thread); after it, the handlers from
    before, but for a signal the block left ignored (a stopped command's exit: `ignore_late_copies`). Each is noted
    before its swap, inside the `try`: a signal landing between two swaps raised out of them and left the first
    swapped handler in place for good."""
    previous = {}
    try:
        for sig in signals:
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)
        yield
    finally:
        for sig, before in previous.items():
            if signal.getsignal(sig) is not signal.SIG_IGN or handler is signal.SIG_IGN:
                signal.signal(sig, signal.SIG_DFL if before is None else before)


RESEND_AFTER_S = 0.01
"""How long after a stop's raise was lost (`raising_at_once`) its signal comes again: time for the code that ignores
exceptions to return."""


def forget_late_copies() -> None:
    """Put back what handled the stop signals before a stopped run: the end of an in-process `train`. Within a
    training verb's command they stay until it ends (`taken_at_start`), so that the late copies and a Ctrl-C that
    come while the verb says how its run ended and returns are still ignored, up to its exit
    (`ignore_late_copies`): there the copy of TERM killed the process (-15), a Ctrl-C made it "interrupted" (130)."""
    if threading.current_thread() is not threading.main_thread() or _in_command:
        return
    for sig in STOP_SIGNALS:
        handler = signal.getsignal(sig)
        if isinstance(handler, LateCopies):
            signal.signal(sig, handler.previous)


def ignore_late_copies() -> None:
    """At the exit of a process whose run a signal stopped: ignore TERM, USR1 and Ctrl-C from here on. The ranks
    stop together when one is signalled, and the launcher (or another node's forwarder) can still deliver this
    rank's own copy while it waits at the exit barrier; the process starts nothing more. A Ctrl-C sent with the stop
    (USR1, TERM and INT within 40 ms) printed a KeyboardInterrupt traceback from an exit handler (torch._dynamo's)
    after the checkpoint; a second could not end the exit sooner either (an exit handler's KeyboardInterrupt is
    printed and ignored, and the exit barrier does not return to Python)."""
    if _stopped_here and threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


STOPPED_EXIT = 75
"""The exit status of a training run a signal stopped before its last update (EX_TEMPFAIL in sysexits.h: "try
again later"). A stopped run that exited 0 looked finished: under Slurm a preemption with a grace period TERMs
the tasks only, and the job ended COMPLETED after checkpointing at step 245 of 100000, never requeued.
launch/slurm/train.sbatch requeues on it."""


def exit_status(stopped_by_signal: bool, step: int | None, steps: int) -> int:
    """A training verb's exit status: STOPPED_EXIT when a signal stopped it with updates left to run (or before it
    knew its step: before loading its checkpoint), else 0."""
    return STOPPED_EXIT if stopped_by_signal and (step is None or step < steps) else 0
