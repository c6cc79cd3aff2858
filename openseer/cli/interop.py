"""``openseer import-weights`` and ``openseer export``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from openseer.cli.command import Command, Positional
from openseer.config import ConfigError


def _read_classes(path: str | None) -> list[str] | None:
    """Class names from a text file (one per line) or a JSON list."""
    if path is None:
        return None
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"config key 'classes': no such file: {file}")
    text = file.read_text()
    if file.suffix == ".json":
        names = json.loads(text)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"config key 'classes': {file} should hold a JSON list of strings")
        return names
    return [line.strip() for line in text.splitlines() if line.strip()]


def _describe(weights) -> str:  # noqa: ANN001 - openseer.weights.Weights, imported lazily
    m = weights.model
    parts = [f"{m.arch} backbone ({len(weights.backbone)} tensors)"]
    if weights.head is not None:
        parts.append(f"SwAV head (hidden {m.head_hidden}, out {m.out_dim}, {m.prototypes} prototypes)")
    if weights.classifier is not None:
        parts.append(f"classifier ({len(weights.classes or [])} classes)")
    return ", ".join(parts)


def _import_weights(cfg, args: argparse.Namespace) -> int:  # noqa: ANN001 - an ImportWeightsConfig
    from openseer.weights import load_weights, save_weights

    weights = load_weights(
        cfg.src,
        fmt=cfg.format,
        arch=cfg.arch,
        classes=_read_classes(cfg.classes),
        skip_unknown=cfg.skip_unknown,
    )
    dst, config = save_weights(weights, cfg.dst)
    print(f"imported {cfg.src}: {_describe(weights)}")
    for note in weights.notes:
        print(f"  {note}")
    print(f"wrote {dst} and {config}")
    return 0


def _export(cfg, args: argparse.Namespace) -> int:  # noqa: ANN001 - an ExportConfig
    from openseer.interop.export import export, export_module, verify_onnx
    from openseer.weights import load_weights

    weights = load_weights(cfg.checkpoint)
    files = export(weights, cfg.dst, cfg.format, with_head=cfg.with_head, size=cfg.size)
    what = "backbone + classifier" if cfg.with_head else "backbone"
    print(f"exported the {what} of {cfg.checkpoint} ({weights.model.arch}) as {cfg.format}:")
    for file in files:
        print(f"  {file}")
    if cfg.format == "torchvision":
        from openseer.interop.torchvision_export import TORCHVISION_REGNETS

        name = TORCHVISION_REGNETS[weights.model.arch]
        strict = f"(num_classes={len(weights.classes or [])})" if cfg.with_head else "()"
        print(
            f"load it with torchvision.models.{name}{strict}.load_state_dict(torch.load(FILE)"
            + (")" if cfg.with_head else ", strict=False)  # every trunk key; fc stays as built")
        )
    if cfg.verify and cfg.format == "onnx":
        import torch

        size = cfg.size or weights.preprocess.size
        images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
        error = verify_onnx(export_module(weights, cfg.with_head), files[0], images)
        print(f"onnxruntime vs PyTorch on 3 random images: relative error {error:.2e}")
    return 0


COMMANDS = [
    Command(
        name="import-weights",
        help="convert a VISSL/ClassyVision (SEER) or timm checkpoint into openseer's safetensors + description YAML",
        description="Read a VISSL/ClassyVision checkpoint (SEER RegNetY-32GF ... 10B, fine-tuned or not) or a timm "
        "state dict, map its keys onto openseer's model, check every shape and write DST (safetensors) and "
        "DST with a .yaml suffix (the network's description). Keys that fit nowhere are an error unless "
        "skip_unknown=true. Example: openseer import-weights seer_regnet32gf.torch seer-32gf.safetensors",
        config="openseer.interop.config:ImportWeightsConfig",
        run=_import_weights,
        positionals=(Positional("SRC", "src"), Positional("DST", "dst")),
    ),
    Command(
        name="export",
        help="write a checkpoint's backbone (optionally + classifier) as safetensors, TorchScript, ONNX or a "
        "torchvision RegNetY state dict",
        description="Write the network of CHECKPOINT (anything openseer.load reads) to DST, in the format its "
        "suffix names unless format= is given. Example: openseer export runs/cpu backbone.onnx verify=true",
        config="openseer.interop.config:ExportConfig",
        run=_export,
        positionals=(Positional("CHECKPOINT", "checkpoint"), Positional("DST", "dst")),
    ),
]
