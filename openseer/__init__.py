"""openseer: self-supervised visual pretraining in the manner of SEER (SwAV on RegNetY)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# The Python API lives in openseer.api; it is imported on first use so that `import openseer` (and the CLI's
# `--help`) does not pay for torch.
_API = ("pretrain", "load", "make_config", "PretrainedModel")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from openseer import api

        return getattr(api, name)
    raise AttributeError(f"module 'openseer' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
