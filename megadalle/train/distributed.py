"""Who am I in the job: rank, local rank and world size from the launcher's environment.

Three launchers, one reading of the environment:
- `deepspeed --no_local_rank ...` and `torchrun` export RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT;
- `srun` exports SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, SLURM_STEP_ID and the node list (the batch script
  itself, outside any step, has the first three too but is no rank: it is refused); launch/slurm/train.sbatch
  exports MASTER_ADDR (the first node), else the first node of `scontrol show hostnames` is used,
  and the port derives from the job id (the same on every task);
- nothing at all means one process (a laptop, a test): rank 0 of 1 on localhost, on a port the OS picks as the
  rendezvous store binds it (port 0, unless MASTER_PORT names one). A port picked free first and bound later, as
  one was, could be taken in between by another run starting on the machine.
Ranks never come from the command line, so hydra never sees `--local_rank`.
"""
from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping, NoReturn

import torch

from megadalle.errors import UserError
from megadalle.local_gpu import launched, launcher, local_gpu


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    master_addr: str
    master_port: int
    launcher: str
    """"env" (deepspeed/torchrun), "slurm" or "single"."""


def slurm_hostnames(nodelist: str) -> list[str]:
    """Slurm's compressed host list ("rack[1-2]-node[01-02],login1") as host names, in order.

    Slurm's own `scontrol show hostnames` expands it: the forms it accepts (several bracketed
    ranges in one name, zero padding, suffixes) are Slurm's to define, not a regex's.
    """
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    except FileNotFoundError:
        raise UserError(f"SLURM_JOB_NODELIST={nodelist}: `scontrol` is not on PATH to expand it; "
                        f"set MASTER_ADDR to the first node") from None
    except subprocess.CalledProcessError as err:
        reason = err.stderr.strip().splitlines()[-1] if err.stderr.strip() else f"exit {err.returncode}"
        raise UserError(f"SLURM_JOB_NODELIST={nodelist}: `scontrol show hostnames` failed: {reason}") from None
    return out.stdout.split()


def free_port() -> int:
    """A free TCP port for several ranks started on this machine (benchmarks/scale_rehearsal.py, the tests), which
    must all be told one port before any of them starts: rank 0's store binds it seconds later, and another process
    could take it between. A one-process run needs none (`detect`: port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def detect(environ: dict[str, str] | None = None) -> DistEnv:
    """Read the launcher's variables (see the module docstring); never mutates the environment. The launcher, the
    rank, the world size and the local rank are local_gpu's (`launcher`, `launched`), which every other reader of
    them takes: a RANK set empty beside srun's variables failed here (int('')) where those took srun's."""
    env = os.environ if environ is None else environ
    name, place = launcher(env), launched(env)
    if name == "env":
        return DistEnv(place.rank, place.local_rank, place.world_size, env.get("MASTER_ADDR") or "127.0.0.1",
                       master_port(env, 29500), "env")
    if name == "slurm" and place.world_size > 1:
        if "SLURM_STEP_ID" not in env:
            # sbatch's own shell (`sbatch -n2 --wrap "megadalle train"`) is rank 0 of the allocation's task count, and
            # no other rank ever starts: rank 0 waited 30 minutes at the rendezvous for them.
            raise UserError(f"SLURM_NTASKS={env['SLURM_NTASKS']} but this process is not in a job step (no "
                            "SLURM_STEP_ID): start the ranks with srun, as launch/slurm/train.sbatch does")
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "localhost")
        port = master_port(env, JOB_PORTS[0] + int(env.get("SLURM_JOB_ID") or 0) % (JOB_PORTS[1] - JOB_PORTS[0]))
        return DistEnv(place.rank, place.local_rank, place.world_size,
                       env.get("MASTER_ADDR") or slurm_hostnames(nodelist)[0], port, "slurm")
    return DistEnv(0, 0, 1, "127.0.0.1", master_port(env, 0), "single")


JOB_PORTS = (20000, 32000)
"""The rendezvous ports a Slurm job's id picks among (launch/slurm/train.sbatch picks the same): below Linux's default
range of ports handed to outgoing connections (32768-60999), where any process on rank 0's node may hold one, and
every requeue of the job would pick that port again."""


def master_port(env: Mapping[str, str], default: int) -> int:
    """MASTER_PORT, `default` where it is unset or empty (an `export MASTER_PORT=$UNSET` in a job script); one line
    naming it where it is no port (it was a traceback from int())."""
    given = env.get("MASTER_PORT") or ""
    if not given:
        return default
    if not given.isdigit() or int(given) > 65535:
        raise UserError(f"MASTER_PORT={given!r}: not a port (a number up to 65535); set it to one, or unset it")
    return int(given)


def ranks(environ: dict[str, str] | None = None) -> tuple[int, int]:
    """(rank, world size) as the launcher's variables give them, without `detect`'s checks and host lookup: what
    reporting an error needs, and the error may be `detect`'s own."""
    place = launched(environ)
    return place.rank, place.world_size


def init(dist_env: DistEnv, timeout_minutes: float = 30.0) -> None:
    """Start torch.distributed through DeepSpeed (gloo on CPU, nccl on GPU); idempotent.

    `timeout_minutes` bounds every collective: a rank whose peer died fails with a timeout
    instead of waiting forever (`deepspeed.timeout_minutes`). Also those of the groups DeepSpeed makes later
    (ZeRO's data-parallel group, a pipeline's stage groups): it calls `new_group` without a timeout, and torch gives
    those its own default (30 minutes on gloo, 10 on NCCL), not the world group's; so the run's timeout becomes that
    default. A rank waiting on a stopped peer in ZeRO's reduction hung past the run's timeout.
    """
    import deepspeed
    from torch.distributed import distributed_c10d

    timeout = timedelta(minutes=timeout_minutes)
    distributed_c10d.default_pg_timeout = distributed_c10d.default_pg_nccl_timeout = timeout
    os.environ.update(RANK=str(dist_env.rank), LOCAL_RANK=str(dist_env.local_rank),
                      WORLD_SIZE=str(dist_env.world_size), MASTER_ADDR=dist_env.master_addr,
                      MASTER_PORT=str(dist_env.master_port))
    if torch.cuda.is_available():
        local_gpu(dist_env.local_rank)
    if not torch.distributed.is_initialized():
        _skip_shm_inference_op()
        deepspeed.init_distributed(auto_mpi_discovery=False, timeout=timeout)
        atexit.register(shutdown)


def _skip_shm_inference_op() -> None:
    """Keep DeepSpeed from compiling its shared-memory all-reduce when a CPU process group starts.

    DeepSpeed 0.19.8 builds that C++ op (about 80 s on 2 cores, again whenever its build flags
    change) the first time any process group starts on the CPU accelerator, one process included,
    but only `inference_all_reduce` uses it: training never does. So a first CPU run (the demo, the
    tests, a laptop smoke test) would pay it for nothing. It is marked unavailable in DeepSpeed's
    table of compatible ops, which DeepSpeed reads before building.
    """
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    if accelerator.device_name() == "cpu":
        builder = accelerator.create_op_builder("ShareMemCommBuilder")
        if builder is not None:
            deepspeed.ops.__compatible_ops__[builder.NAME] = False


FAILED_MEETING_S = 10.0
"""How long a rank whose run crashed (`crashed`) waits at exit for the others to meet it. Ranks that crash on the same
error meet within it and close their group cleanly; a rank that crashed alone (its loader worker killed by the
out-of-memory killer, a CUDA out-of-memory error) leaves after it, and its launcher (torchrun, srun
--kill-on-bad-exit, DeepSpeed's) ends the others. Met without a bound, its barrier never matched the others' pending
all-reduce, and the whole job hung for `deepspeed.timeout_minutes` (30 by default) with every GPU idle. A failure the
ranks learn together (`first_error`: a checkpoint that cannot be saved, a refused setting) is no crash: they meet
without a bound, so that rank 0 finishes its own end work (removing an unfinished checkpoint, wandb's finish)."""

_crashed = False


def crashed() -> None:
    """Note that this rank's run ended in an error no verb reported, which its peers may not share: its exit meets
    them for FAILED_MEETING_S at most (`shutdown`)."""
    global _crashed
    _crashed = True


def shutdown() -> None:
    """Meet the other ranks, then close the process group (registered to run at exit).

    Without it the first rank to exit closes its gloo connections while a peer's background
    thread still reads them, and the peer dies with std::terminate (SIGABRT) after finishing.
    After a crash the meeting is bounded (FAILED_MEETING_S); unmet by then, or cut short by a Ctrl-C, the group is
    left open (closing it under a pending barrier can itself hang) and the process exits regardless.
    """
    if not torch.distributed.is_initialized():
        return
    met = threading.Event()

    def meet() -> None:
        try:
            barrier()
        except Exception:  # a peer is gone (it crashed, or was killed): its error was reported; close anyway
            pass
        met.set()

    if not _crashed:
        meet()
    else:
        threading.Thread(target=meet, name="megadalle-exit-barrier", daemon=True).start()
        try:
            met.wait(FAILED_MEETING_S)
        except KeyboardInterrupt:  # a Ctrl-C at a rank that is leaving anyway: it leaves with its own status
            pass
    if met.is_set():
        torch.distributed.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """End a process that ran collectives: `shutdown`, every atexit handler (wandb's, logging's), then
    `os._exit(code)`, skipping the interpreter's finalization.

    Why not a plain exit: a gloo worker thread can still be destroying a finished collective whose
    tensors Python owns when finalization begins. It cannot take the GIL then, Python ends it with
    pthread_exit, and the unwind through torch's noexcept destructor calls std::terminate: a rank
    that finished its work exits with SIGABRT ('terminate called without an active exception'; a
    core dump of a 2-rank ZeRO-3 run, which did so in 1 run of 28 here, showed ProcessGroupGloo::runLoop ->
    ~AsyncAllgatherWork -> gil_scoped_acquire -> pthread_exit). Everything the process writes is
    closed by then, so finalization has nothing left to save, and the exit status is the run's.

    The other atexit handlers run before `shutdown`'s barrier, so the ranks exit together: a run a signal stopped
    exits non-zero on every rank (signals.STOPPED_EXIT), and srun --kill-on-bad-exit or DeepSpeed's launcher kills
    the ranks still running when the first one exits non-zero, rank 0 in its wandb finish when the others had
    nothing left to do (srun then reports the kill, 137, instead of the run's status). A run that crashed meets the
    others for FAILED_MEETING_S at most: they may be waiting in a collective it will never join.
    """
    atexit.unregister(shutdown)
    atexit._run_exitfuncs()
    shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def world_size() -> int:
    """The number of ranks of the started process group (1 when none was started)."""
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def broadcast_object(obj, src: int = 0):
    """`obj` from rank `src` on every rank (e.g. the run directory rank 0 chose)."""
    box = [obj]
    if world_size() > 1:
        torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on at least one (e.g. a signal reached one rank)."""
    return largest([1.0 if flag else 0.0])[0] > 0


def largest(values: list[float]) -> list[float]:
    """Each value's maximum over the ranks, on every rank, in one all-reduce (float64: a byte count stays exact)."""
    if world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=collective_device())
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.tolist()


def first_error(message: str | None) -> str | None:
    """On every rank, the error `message` of the lowest rank that had one (prefixed with that rank when there
    are several), or None when none had: then every rank stops with the same line, and none waits at a
    barrier for a rank that has left."""
    if world_size() == 1:
        return message
    messages = [None] * world_size()
    torch.distributed.all_gather_object(messages, message)
    return next((f"rank {rank}: {m}" for rank, m in enumerate(messages) if m is not None), None)


def barrier() -> None:
    if world_size() > 1:
        torch.distributed.barrier()


def collective_device() -> torch.device:
    """Where this rank's tensors for a collective live: its current GPU (NCCL), else the CPU (gloo)."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
