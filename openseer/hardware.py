"""What this machine is: the processor or GPU model, the CPU's feature flags, whether it computes bf16 natively,
and how many cores this process may use.

Printed beside every measured figure (benchmarks, run summaries) and read by ``openseer.train.autotune`` to
decide which fast paths to try. The parsing is pure (it takes /proc/cpuinfo's text) and tested on samples from
the processors this project has run on.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from pathlib import Path

import torch


def read_cpuinfo() -> str:
    """/proc/cpuinfo's text ('' where there is none: macOS, Windows)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpuinfo_field(cpuinfo: str, names: tuple[str, ...]) -> str | None:
    """The value of the first line of /proc/cpuinfo's text whose key is one of ``names`` (lower case)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in names:
            return value.strip()
    return None


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor in /proc/cpuinfo's text ('flags' on x86, 'Features' on Arm)."""
    return set((cpuinfo_field(cpuinfo, ("flags", "features")) or "").split())


_X86 = ("x86_64", "amd64", "i386", "i686")
_BF16_FLAGS = {"x86": ("amx_bf16", "avx512_bf16"), "arm": ("bf16",)}  # x86: AMX tiles, AVX-512 dot products


def bf16_flags(flags: Iterable[str], machine: str) -> list[str]:
    """The feature flags among ``flags`` by which a CPU computes bf16 products in hardware (x86: amx_bf16,
    avx512_bf16; aarch64: bf16, FEAT_BF16), best first; [] where oneDNN emulates bf16."""
    flags = set(flags)
    wanted = _BF16_FLAGS["x86" if machine.lower() in _X86 else "arm"]
    return [f for f in wanted if f in flags]


def native_bf16(flags: Iterable[str], machine: str) -> bool:
    """Whether a CPU with these feature flags computes bf16 products in hardware (else oneDNN emulates them)."""
    return bool(bf16_flags(flags, machine))


def hardware_name(device: torch.device, cpuinfo: str | None = None) -> str:
    """The processor model ('AMD EPYC', 'Intel(R) Xeon(R) Platinum 8480+') or the GPU's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    text = cpuinfo if cpuinfo is not None else read_cpuinfo()
    model = cpuinfo_field(text, ("model name", "cpu model", "hardware"))
    if model is not None:
        return model
    return platform.processor() or platform.machine() or "unknown cpu"


def device_native_bf16(device: torch.device) -> bool:
    """bf16 computed in hardware by this device (CPU flags; CUDA compute capability 8.0 or newer)."""
    return bf16_support(device)[0] == "native"


def bf16_support(device: torch.device) -> tuple[str, str]:
    """('native' or 'emulated', what decides it): the CPU flag ('avx512_bf16', 'amx_bf16', 'bf16'; 'none' where
    the CPU has none of them) or the CUDA compute capability ('sm_90'). Printed beside the precision
    ``run.precision=auto`` takes."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return ("native" if major >= 8 else "emulated"), f"sm_{major}{minor}"
    found = bf16_flags(cpu_flags(read_cpuinfo()), platform.machine())
    return ("native", found[0]) if found else ("emulated", "none")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, else all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def synchronize(device: torch.device | None = None) -> None:
    """Wait for the work queued on a GPU (``device``'s, or the current one's), so that a clock read next
    measures it; nothing to wait for on a CPU."""
    if device is not None and device.type != "cuda":
        return
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize(device)


BUSY_LOAD_PER_CORE = 1.5
"""A 1-minute load average above this many runnable threads per usable core: other work shares the cores."""


def busy_cpu(device: torch.device, load: float | None = None, cores: int | None = None) -> str | None:
    """Why timings taken now on the CPU would mislead a later run (other work is sharing its cores), or None.

    The 1-minute load average (``os.getloadavg``) against :data:`BUSY_LOAD_PER_CORE` per usable core; a GPU's
    timings, and a system without a load average, are never called busy."""
    if device.type != "cpu":
        return None
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # not on every platform
            return None
    cores = cores if cores is not None else usable_cores()
    if load <= BUSY_LOAD_PER_CORE * cores:
        return None
    return f"the CPU is busy (load average {load:.1f} on {cores} cores)"
