"""Inductor's compile caches kept where a reboot does not empty them, and which training steps they hold.

``torch.compile`` on a CPU costs a minute or two for the cpu preset's step when its caches are cold, and seconds
when they hold that step's compile: the difference decides whether compiling pays within a short budget
(``openseer.train.autotune``). torch keeps those caches under /tmp by default; openseer keeps them under its own
cache folder, and marks there each step (by its autotune key) whose compile they hold.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from openseer.data.cache import default_cache_dir


def compile_cache_dir(root: Path | None = None) -> Path:
    """Where inductor's caches go for openseer's runs: ``TORCHINDUCTOR_CACHE_DIR`` when the user set it, else
    ``<openseer cache>/inductor``.

    torch writes its own default (a folder under /tmp, which many machines empty at reboot) into
    ``TORCHINDUCTOR_CACHE_DIR`` the first time anything asks for the folder, and importing torchvision does. So
    that value in the environment is no sign that the user chose it, and it is replaced.
    """
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is not None and os.path.abspath(current) != os.path.abspath(_torch_default_cache_dir()):
        return Path(current)
    return (root or default_cache_dir()) / "inductor"


def _torch_default_cache_dir() -> str:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir as torch_default
    except ImportError:  # an older or newer layout: nothing to tell apart from the user's choice
        return ""
    return torch_default()


def _compiled_marker(key: str, root: Path | None = None) -> Path:
    # inside the compile caches' own folder, so that clearing those caches clears the mark too
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return compile_cache_dir(root) / "openseer-compiled" / digest


def compile_cache_warm(key: str, root: Path | None = None) -> bool:
    """Whether inductor's caches hold the compile of the step ``key`` names (``autotune.cache_key``): a run of this
    config compiled on this machine, and the caches were not cleared since."""
    return _compiled_marker(key, root).exists()


def mark_compiled(key: str, root: Path | None = None) -> None:
    """Records that the step ``key`` names is compiled into inductor's caches (or is about to be, at the run's
    first step)."""
    marker = _compiled_marker(key, root)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


_compiled_in_process: set[str] = set()


def compiled_in_process(key: str, note: bool = False) -> bool:
    """Whether this process compiled the step ``key`` names before; ``note``: record that it does now.

    A second compile in one process reuses torch's in-memory work and takes under a second where a fresh
    process with warm caches on disk takes seconds to minutes, so its time says nothing about the next run's.
    """
    seen = key in _compiled_in_process
    if note:
        _compiled_in_process.add(key)
    return seen


def persist_compile_caches(root: Path | None = None) -> Path:
    """Keep inductor's FX graph and AOT autograd caches in :func:`compile_cache_dir`, so that the compile of a
    later run, in this session or after a reboot, reuses this one's work. Call before compiling."""
    path = compile_cache_dir(root)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    return path
