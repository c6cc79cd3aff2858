"""The machine's facts parsed from /proc/cpuinfo samples of the processors this project has run on."""

from __future__ import annotations

import os

import pytest
import torch

from openseer import hardware as hw

X86_AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx avx2 fma f16c\n"
X86_BF16 = "processor\t: 0\nflags\t\t: avx2 avx512f avx512bw avx512_bf16\n"
X86_AMX = "processor\t: 0\nflags\t\t: avx2 avx512f amx_tile amx_bf16 amx_int8\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU part\t: 0xd40\n"


@pytest.mark.parametrize(
    ("text", "machine", "native"),
    [
        (X86_AVX2, "x86_64", False),  # Zen 3: no AVX-512, oneDNN emulates bf16
        (X86_BF16, "x86_64", True),
        (X86_AMX, "x86_64", True),
        (ARM_BF16, "aarch64", True),
        ("Features\t: fp asimd\n", "aarch64", False),
        ("", "x86_64", False),
    ],
)
def test_native_bf16_from_cpu_flags(text, machine, native):
    assert hw.native_bf16(hw.cpu_flags(text), machine) is native


def test_cpu_flags_and_model_name_parsed():
    assert {"avx2", "f16c"} <= hw.cpu_flags(X86_AVX2)
    assert hw.hardware_name(torch.device("cpu"), X86_AVX2) == "AMD EPYC"
    assert hw.hardware_name(torch.device("cpu"), "") != ""  # falls back to the platform's name


def test_usable_cores_is_at_least_one_and_at_most_the_machine() -> None:
    assert 1 <= hw.usable_cores() <= (os.cpu_count() or 1)


@pytest.mark.parametrize(
    ("text", "machine", "flags"),
    [
        (X86_AVX2, "x86_64", []),
        (X86_BF16, "x86_64", ["avx512_bf16"]),
        (
            X86_AMX.rstrip() + " avx512_bf16\n",
            "x86_64",
            ["amx_bf16", "avx512_bf16"],
        ),  # AMX first: the faster path
        (ARM_BF16, "aarch64", ["bf16"]),
    ],
)
def test_the_flags_that_make_bf16_native(text, machine, flags):
    assert hw.bf16_flags(hw.cpu_flags(text), machine) == flags


def test_bf16_support_names_what_decides_it(monkeypatch):
    monkeypatch.setattr(hw, "read_cpuinfo", lambda: X86_BF16)
    monkeypatch.setattr(hw.platform, "machine", lambda: "x86_64")
    assert hw.bf16_support(torch.device("cpu")) == ("native", "avx512_bf16")
    assert hw.device_native_bf16(torch.device("cpu"))
    monkeypatch.setattr(hw, "read_cpuinfo", lambda: X86_AVX2)
    assert hw.bf16_support(torch.device("cpu")) == ("emulated", "none")
    assert not hw.device_native_bf16(torch.device("cpu"))


def test_a_cpu_is_busy_when_its_load_is_well_above_its_cores() -> None:
    cpu = torch.device("cpu")
    busy_cpu = hw.busy_cpu
    assert busy_cpu(cpu, load=2.5, cores=2) is None  # the run's own threads and a little more
    why = busy_cpu(cpu, load=9.3, cores=2)
    assert why is not None and "9.3" in why and "2 cores" in why
    assert busy_cpu(torch.device("cuda"), load=50.0, cores=2) is None  # a GPU's timings are its own
    assert busy_cpu(cpu) is None or "load average" in busy_cpu(cpu)  # reads this machine's load


def test_synchronize_waits_only_where_there_is_queued_gpu_work() -> None:
    hw.synchronize(torch.device("cpu"))  # nothing to wait for, whether or not a GPU exists
    hw.synchronize()  # the current GPU's queue where one is in use, else nothing
    if not torch.cuda.is_available():
        assert not torch.cuda.is_initialized()  # waiting never starts CUDA on a machine without a GPU
