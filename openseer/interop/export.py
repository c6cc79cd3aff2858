"""Deployable files from any checkpoint openseer reads: safetensors, TorchScript (traced), ONNX, and the state dict
of torchvision's ``regnet_y_*`` (:mod:`openseer.interop.torchvision_export`).

The exported network maps normalised images (B, 3, size, size) to pooled features (B, D) or, with a fine-tuned
classifier (``with_head``), to logits (B, C). The batch axis is dynamic in every format; TorchScript also accepts
other image sizes, ONNX is exported for ``size`` (the config's first crop size unless given).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from openseer.config import ConfigError
from openseer.fileio.checkpoint import CheckpointError
from openseer.weights import Weights, save_weights

log = logging.getLogger(__name__)

ExportFormat = Literal["safetensors", "torchscript", "onnx", "torchvision"]
FORMATS: tuple[str, ...] = ("safetensors", "torchscript", "onnx", "torchvision")
_ONNX_SINGLE_FILE_LIMIT = 1.5 * 2**30  # protobuf caps a file at 2 GiB: larger weights go to a side file


class Classifier(nn.Module):
    """``{"backbone": ..., "classifier": nn.Linear}``: images -> logits; state keys ``backbone.*``, ``classifier.*``."""

    def __init__(self, backbone: nn.Module, classifier: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images))


def export_module(weights: Weights, with_head: bool = False) -> nn.Module:
    """The network to export, in eval mode: the backbone, or backbone + classifier with ``with_head``."""
    if with_head and weights.classifier is None:
        raise _no_classifier(weights)
    backbone = weights.build_backbone()
    if not with_head:
        return backbone
    classifier = weights.build_classifier()
    if classifier is None:
        raise _no_classifier(weights)
    return Classifier(backbone, classifier).eval()


def _no_classifier(weights: Weights) -> CheckpointError:
    return CheckpointError(
        f"with_head: {weights.source} holds no classifier (a pretraining checkpoint has none; use a "
        "fine-tuned checkpoint that stores 'classes', or export the backbone alone)"
    )


def _example(weights: Weights, size: int | None, batch: int = 2) -> torch.Tensor:
    size = size or weights.preprocess.size
    if size < 8:
        raise ConfigError(f"config key 'size': got {size}, expected >= 8 pixels")
    # batch 2 rather than 1: tracing with batch 1 lets some exporters specialise the batch axis away
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def export_torchscript(module: nn.Module, example: torch.Tensor, dst: Path) -> Path:
    with torch.no_grad(), warnings.catch_warnings():
        # tracing is deprecated upstream, yet it is still what C++/mobile runtimes load
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(module, example)
        torch.jit.save(traced, str(dst))
    return dst


def export_onnx(module: nn.Module, example: torch.Tensor, dst: Path, output_name: str) -> list[Path]:
    """ONNX through ``torch.export`` (needs ``onnxscript``); returns the file(s) written."""
    try:
        import onnxscript  # noqa: F401 - the exporter imports it lazily and fails late without it
    except ImportError as err:
        raise ConfigError("ONNX export needs onnx and onnxscript: pip install 'openseer[export]'") from err
    n_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    external = n_bytes > _ONNX_SINGLE_FILE_LIMIT
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            str(dst),
            input_names=["images"],
            output_names=[output_name],
            dynamic_shapes=({0: batch},),
            external_data=external,
            verbose=False,
        )
    side = dst.with_name(dst.name + ".data")
    return [dst, side] if side.exists() else [dst]


def export(
    weights: Weights, dst: str | Path, fmt: ExportFormat, with_head: bool = False, size: int | None = None
) -> list[Path]:
    """Write ``weights`` to ``dst`` in format ``fmt``; returns the files written."""
    dst = Path(dst).expanduser()
    dst.parent.mkdir(parents=True, exist_ok=True)
    if fmt not in FORMATS:
        raise ConfigError(f"config key 'format': got '{fmt}', expected one of {', '.join(FORMATS)}")
    if fmt == "safetensors":  # tensors only: no need to build (and hold) the network
        if with_head and weights.classifier is None:
            raise _no_classifier(weights)
        kept = replace(
            weights,
            head=None,
            classifier=weights.classifier if with_head else None,
            classes=weights.classes if with_head else None,
        )
        return list(save_weights(kept, dst))
    if fmt == "torchvision":
        from openseer.interop.torchvision_export import export_torchvision

        if with_head and weights.classifier is None:
            raise _no_classifier(weights)
        return [export_torchvision(weights, dst, with_head)]
    module = export_module(weights, with_head)
    example = _example(weights, size)
    if fmt == "torchscript":
        return [export_torchscript(module, example, dst)]
    return export_onnx(module, example, dst, "logits" if with_head else "features")


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |a - e| / max |e|: one figure for a whole output, robust to elements near zero."""
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def verify_onnx(module: nn.Module, path: Path, images: torch.Tensor) -> float:
    """Run ``path`` with onnxruntime on ``images`` and return its relative error against ``module``."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ConfigError("checking an ONNX file needs onnxruntime: pip install 'openseer[export]'") from err
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    with torch.no_grad():
        expected = module(images)
    return relative_error(torch.from_numpy(output), expected)
