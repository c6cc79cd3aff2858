"""``openseer import-weights`` and ``openseer export``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from openseer.config import ConfigError

IMPORT_FORMATS = ("auto", "vissl", "timm")
EXPORT_FORMATS = ("safetensors", "torchscript", "onnx")  # = export.FORMATS, repeated so `--help` skips torch


def _read_classes(path: str | None) -> list[str] | None:
    """Class names from a text file (one per line) or a JSON list."""
    if path is None:
        return None
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"--classes: no such file: {file}")
    text = file.read_text()
    if file.suffix == ".json":
        names = json.loads(text)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"--classes: {file} should hold a JSON list of strings")
        return names
    return [line.strip() for line in text.splitlines() if line.strip()]


def _describe(weights) -> str:  # noqa: ANN001 - openseer.interop.Weights, imported lazily
    m = weights.config.model
    parts = [f"{m.arch} backbone ({len(weights.backbone)} tensors)"]
    if weights.head is not None:
        parts.append(f"SwAV head (hidden {m.head_hidden}, out {m.out_dim}, {m.prototypes} prototypes)")
    if weights.classifier is not None:
        parts.append(f"classifier ({len(weights.classes or [])} classes)")
    return ", ".join(parts)


def _import_weights(args: argparse.Namespace) -> int:
    from openseer.weights import load_weights, save_weights

    weights = load_weights(
        args.src,
        fmt=args.format,
        arch=args.arch,
        classes=_read_classes(args.classes),
        skip_unknown=args.skip_unknown,
    )
    dst, config = save_weights(weights, args.dst)
    print(f"imported {args.src}: {_describe(weights)}")
    for note in weights.notes:
        print(f"  {note}")
    print(f"wrote {dst} and {config}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from openseer.interop.export import export, export_module, verify_onnx
    from openseer.weights import load_weights

    weights = load_weights(args.checkpoint)
    files = export(weights, args.dst, args.format, with_head=args.with_head, size=args.size)
    what = "backbone + classifier" if args.with_head else "backbone"
    print(f"exported the {what} of {args.checkpoint} ({weights.config.model.arch}) as {args.format}:")
    for file in files:
        print(f"  {file}")
    if args.verify and args.format == "onnx":
        import torch

        size = args.size or weights.preprocess.size
        images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
        error = verify_onnx(export_module(weights, args.with_head), files[0], images)
        print(f"onnxruntime vs PyTorch on 3 random images: relative error {error:.2e}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``import-weights`` and ``export`` to the ``openseer`` command line."""
    p = subparsers.add_parser(
        "import-weights",
        help="convert a VISSL/ClassyVision (SEER) or timm checkpoint into openseer's safetensors + config YAML",
        description="Read a VISSL/ClassyVision checkpoint (SEER RegNetY-32GF ... 10B, fine-tuned or not) or a timm "
        "state dict, map its keys onto openseer's model, check every shape and write DST (safetensors) and "
        "DST with a .yaml suffix (the matching config). Keys that fit nowhere are an error unless "
        "--skip-unknown. Example: openseer import-weights seer_regnet32gf.torch seer-32gf.safetensors",
    )
    p.add_argument("src", metavar="SRC", help="checkpoint file (.torch, .pth, .pt, .bin, .safetensors)")
    p.add_argument("dst", metavar="DST", help="output .safetensors file; the config goes next to it as .yaml")
    p.add_argument(
        "--arch", default=None, help="architecture (default: read off the tensor shapes), e.g. regnety_32gf"
    )
    p.add_argument("--format", choices=IMPORT_FORMATS, default="auto", help="layout of SRC (default: detect)")
    p.add_argument(
        "--classes", default=None, help="class names of a classifier: text file (one a line) or JSON list"
    )
    p.add_argument(
        "--skip-unknown", action="store_true", help="import despite keys with no place in the model"
    )
    p.set_defaults(func=_import_weights)

    p = subparsers.add_parser(
        "export",
        help="write a checkpoint's backbone (optionally + classifier) as safetensors, TorchScript or ONNX",
        description="CHECKPOINT: an openseer run folder or checkpoint, a file written by import-weights, or any "
        "file import-weights reads. Example: openseer export runs/cpu backbone.onnx --format onnx --verify",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("dst", metavar="DST", help="output file")
    p.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    p.add_argument(
        "--with-head", action="store_true", help="include the classifier of a fine-tuned checkpoint"
    )
    p.add_argument(
        "--size", type=int, default=None, help="input side for tracing (default: the config's first crop)"
    )
    p.add_argument("--verify", action="store_true", help="ONNX: run the file with onnxruntime and compare")
    p.set_defaults(func=_export)
