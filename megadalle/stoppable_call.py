"""A long call into C that never returns to Python until it is done, made stoppable: it runs in a child process.

Python runs a signal's handler only between bytecodes of the main thread, so Ctrl-C (or the raised stop of a data
verb, interrupted.py) during sentencepiece's training waited for the training's end: minutes at 10 million
captions, with a second Ctrl-C ignored as the first. Run in a child (`call`), the call leaves this process free to
take the signal at once; the child is killed on the way out, and a child that dies (the kernel's out-of-memory
killer) is an error naming its signal (`ChildDied`), never a wait for a result that will not come.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
from typing import Any, Callable


class ChildDied(RuntimeError):
    """The child process ended without a result: `how` names its exit status or signal."""

    def __init__(self, how: str):
        super().__init__(how)
        self.how = how


def call(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)`, run in a child process: its result, or the exception it raised, raised again here (by message
    where it does not pickle). `fn` and `args` must pickle where the start method is not fork."""
    context = mp.get_context()
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(send, fn, args), daemon=True)
    try:
        child.start()
        send.close()  # the child's end: when the child ends, `recv` sees the end of the pipe
        ok, value = receive.recv()
    except EOFError:
        child.join()
        raise ChildDied(exit_status(child.exitcode)) from None
    finally:
        send.close()
        if child.is_alive():  # a stop while it ran (or while it started), or a result just sent
            child.kill()
        if child.pid is not None:
            child.join()
        receive.close()
    if not ok:
        raise value
    return value


def _child(send, fn: Callable[..., Any], args: tuple) -> None:
    """The child's body. Ctrl-C reaches the whole process group: the parent decides, and kills the child."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = (True, fn(*args))
    except Exception as err:  # the parent raises it
        result = (False, err)
    try:
        send.send(result)
    except Exception as err:  # an exception or a result that does not pickle: its message still goes
        send.send((False, RuntimeError(f"{type(result[1]).__name__}: {result[1]}" if not result[0] else
                                       f"the result of {getattr(fn, '__name__', fn)} does not pickle: {err}")))


def exit_status(code: int | None) -> str:
    """A child's exit code as a sentence's words: "SIGKILL" for a signal, "exit status 3" otherwise."""
    if code is not None and code < 0:
        return signal.Signals(-code).name
    return f"exit status {code}"
