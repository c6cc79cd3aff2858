"""benchmarks/gpu_check.sh / gpu_check.py: without a GPU they end cleanly with ``gpu=none``; the sections'
bookkeeping (deadline, failures, last line); and, slow, every section but compile at toy sizes on the CPU."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def test_without_a_gpu_the_last_line_is_gpu_none(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gpu_check = _module()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "gpu=none" and "no CUDA GPU" in lines[0] and len(lines) == 2


def test_without_python_and_torch_the_wrapper_fails_with_one_line() -> None:
    run = subprocess.run(["bash", str(SCRIPT)], env=_env(PYTHON="false"), capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stdout.strip() == "gpu_check: no Python that can import torch (set PYTHON=/path/to/python)"


def test_sections_keep_going_and_skip_what_the_deadline_cannot_hold(
    capsys: pytest.CaptureFixture[str],
) -> None:
    gpu_check = _module()
    check = gpu_check.Check(deadline_s=100.0)
    check.run("ok", 1, lambda: check.values.update(rg8_img_s=1234.5678))
    check.run("boom", 1, lambda: 1 / 0)
    check.run("late", 1000, lambda: check.values.update(fsdp_img_s=1.0))
    check.values["gpu"] = "NVIDIA H200"
    out = capsys.readouterr().out
    assert "[late] skipped" in out and "[boom] FAILED" in out and "ZeroDivisionError" in out
    assert check.failed == ["boom"]
    last = dict(item.split("=") for item in check.last_line().split())
    assert list(last) == [*gpu_check.KEYS, "failed"]
    assert last["gpu"] == "NVIDIA_H200" and last["rg8_img_s"] == "1235" and last["fsdp_img_s"] == "-"
    assert last["failed"] == "1"


@pytest.mark.slow
def test_wrapper_without_a_gpu_exits_0_with_gpu_none() -> None:
    env = _env(PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")
    run = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().splitlines()[-1] == "gpu=none"


@pytest.mark.slow
def test_every_section_runs_at_toy_sizes_on_the_cpu(tmp_path: Path) -> None:
    """Minutes on a shared 2-core machine: the sections' code paths (FSDP from the meta device, bf16, the real
    loop) without a GPU, so that a lent GPU's short time is not spent finding a typo."""
    env = _env(CUDA_VISIBLE_DEVICES="", OPENSEER_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu-smoke", "--deadline-s", "3600"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    last = dict(item.split("=") for item in run.stdout.strip().splitlines()[-1].split())
    assert last["gpu"] == "cpu-smoke" and last["failed"] == "0"
    for key in ("bf16_peak_tflops", "rg8_img_s", "rg32_img_s", "fsdp_img_s", "rehearsal_img_s"):
        assert float(last[key]) > 0, key
    assert last["rehearsal_steps"] == "3" and last["compile_s"] == "-"
