"""Process-group helpers that fall back to a single process.

Every sum over the global batch in openseer goes through these functions, so the same code runs on one CPU
process and under ``torchrun`` on many GPUs. With no process group initialised they are no-ops (world size 1).
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import sys
import traceback
from collections.abc import MutableMapping
from pathlib import Path

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def is_enabled() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_enabled() else 1


def rank() -> int:
    return dist.get_rank() if is_enabled() else 0


def local_rank() -> int:
    """This process's index on its node: torchrun's LOCAL_RANK, else SLURM's SLURM_LOCALID, else 0."""
    return int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")))


def is_main() -> bool:
    return rank() == 0


def launch_rank() -> int:
    """This process's rank in its launch (torchrun's or SLURM's), also before init and after :func:`destroy`."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def resolve_device(name: str = "auto") -> torch.device:
    """The device every command runs on: 'auto' is this process's GPU when there is one (``cuda:LOCAL_RANK``
    under torchrun or SLURM, so that the processes of a node do not all share GPU 0), else the CPU; a plain
    'cuda' means this process's GPU too; anything else ('cpu', 'cuda:1', 'mps') is taken as given."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank() % max(torch.cuda.device_count(), 1))
    return torch.device(name)


def launched_with_torchrun() -> bool:
    """torchrun (and SLURM wrappers that mimic it) export these variables; we never configure them by hand."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list: 'gpu[007-009,012],cpu1' -> 'gpu007' (what ``scontrol show
    hostnames`` would print first, without needing the slurm binaries inside a container)."""
    head = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if head is None:
        raise ValueError(f"cannot parse SLURM node list {nodelist!r}")
    prefix, ranges = head.group(1), head.group(2)
    return prefix if ranges is None else prefix + ranges.split(",")[0].split("-")[0]


def env_from_slurm(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Fill torchrun's variables from SLURM's when a job step was started with ``srun`` and no torchrun.

    RANK <- SLURM_PROCID, WORLD_SIZE <- SLURM_STEP_NUM_TASKS (or SLURM_NTASKS), LOCAL_RANK <- SLURM_LOCALID,
    MASTER_ADDR <- the first node of the step (unless set), MASTER_PORT <- a port derived from the job id (unless
    set), so that two jobs sharing a node do not collide. Returns whether anything was filled in.
    """
    if "RANK" in environ or "SLURM_PROCID" not in environ:
        return False
    world = environ.get("SLURM_STEP_NUM_TASKS", environ.get("SLURM_NTASKS", "1"))
    if int(world) <= 1:
        return False
    environ["RANK"] = environ["SLURM_PROCID"]
    environ["WORLD_SIZE"] = world
    environ["LOCAL_RANK"] = environ.get("SLURM_LOCALID", "0")
    nodes = environ.get("SLURM_STEP_NODELIST", environ.get("SLURM_JOB_NODELIST", "127.0.0.1"))
    environ.setdefault("MASTER_ADDR", first_slurm_host(nodes))
    environ.setdefault("MASTER_PORT", str(20_000 + int(environ.get("SLURM_JOB_ID", "0")) % 20_000))
    return True


def init_from_env(device: torch.device, timeout_s: float = 600.0) -> bool:
    """Join the process group described by torchrun's (or SLURM's) environment; returns whether one was joined.

    Backend: nccl for CUDA devices, gloo otherwise. ``timeout_s`` bounds every collective, so a dead rank ends
    the job with an error instead of a hang; :func:`explain_failure` turns that error into a readable one.
    """
    env_from_slurm()
    if is_enabled() or not launched_with_torchrun():
        return is_enabled()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    global _timeout_s
    _timeout_s = timeout_s
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    _install_failure_report()
    log.info("joined process group: rank %d of %d (%s)", rank(), world_size(), backend)
    return True


class PeerLostError(RuntimeError):
    """A collective failed or timed out: another process probably died; the message says which and what next."""


_timeout_s: float | None = None
_report_installed = False


def _failure_message(what: str, err: BaseException) -> str:
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"rank {rank()} of {world_size()}: {what} failed ({detail}). Another process probably died "
        f"or stopped answering for run.dist_timeout_s={_timeout_s} s; look for the first error in the other "
        "ranks' logs. The job cannot continue: restart it with --resume."
    )


def _is_comm_failure(err: BaseException) -> bool:
    """torch raises DistError subclasses for most communication failures, a bare RuntimeError for some."""
    return isinstance(err, dist.DistError) or (
        isinstance(err, RuntimeError)
        and re.search(r"gloo|nccl|timed out|connection|peer", str(err), re.I) is not None
    )


def _collective(what: str, fn, *args, **kwargs) -> None:  # noqa: ANN001 - a torch.distributed function
    try:
        fn(*args, **kwargs)
    except RuntimeError as err:  # DistError is one
        if not _is_comm_failure(err):
            raise
        raise PeerLostError(_failure_message(f"collective '{what}'", err)) from err


def explain_failure(err: BaseException) -> str | None:
    """A readable message for an exception raised by a collective (ours or DDP/FSDP's own), else None.

    The collective is named after the innermost ``torch.distributed`` function in the traceback, or, for the
    collectives autograd runs (DDP/FSDP gradient reduction), after the innermost openseer line.
    """
    if isinstance(err, PeerLostError):
        return str(err)
    if not _is_comm_failure(err):
        return None
    frames = traceback.extract_tb(err.__traceback__)
    c10d = [f for f in frames if f.filename.endswith("distributed_c10d.py")]
    ours = [f for f in frames if f"{os.sep}openseer{os.sep}" in f.filename]
    if c10d:
        what = f"collective '{c10d[-1].name}'"
    elif ours:
        line, where = (ours[-1].line or "").strip(), f"{Path(ours[-1].filename).name}:{ours[-1].lineno}"
        what = f"a collective inside `{line}` ({where})"
    else:
        what = "a collective"
    return _failure_message(what, err)


def _install_failure_report() -> None:
    """Once in a process group, end an uncaught collective failure with one line saying what happened.

    DDP and FSDP run their collectives inside autograd, so their failures cannot be wrapped like ours; the
    hook keeps the traceback and adds the explanation after it.
    """
    global _report_installed
    if _report_installed:
        return
    _report_installed = True
    previous = sys.excepthook

    def report(kind, value, tb) -> None:  # noqa: ANN001 - sys.excepthook's signature
        previous(kind, value, tb)
        message = explain_failure(value)
        if message:
            print(f"openseer: error: {message}", file=sys.stderr, flush=True)

    sys.excepthook = report


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over all processes; returns the tensor for chaining."""
    if is_enabled():
        _collective("all_reduce(sum)", dist.all_reduce, tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    if is_enabled():
        _collective("all_reduce(max)", dist.all_reduce, tensor, op=dist.ReduceOp.MAX)
    return tensor


def any_process(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on any process; with one process, no tensor and no device sync."""
    if not is_enabled():
        return flag
    return all_reduce_max(torch.tensor(float(flag), device=device)).item() > 0


def barrier() -> None:
    if is_enabled():
        _collective("barrier", dist.barrier)


def destroy() -> None:
    if is_enabled():
        dist.destroy_process_group()
