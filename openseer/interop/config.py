"""The typed configs of ``openseer import-weights`` and ``openseer export`` (no torch import: ``--help`` reads
them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from openseer.config import ConfigError

# what `format: null` reads off the destination's suffix
EXPORT_SUFFIXES: dict[str, str] = {
    ".safetensors": "safetensors",
    ".pt": "torchscript",
    ".ts": "torchscript",
    ".onnx": "onnx",
    ".pth": "torchvision",
}


@dataclass
class ImportWeightsConfig:
    src: str = ""
    """Checkpoint to convert: a VISSL/ClassyVision (SEER) file or a timm/torchvision state dict (.torch, .pth, .pt,
    .bin, .safetensors)."""
    dst: str = ""
    """Output .safetensors file; the network's description (model.* keys, input preprocessing) is written next to
    it with a .yaml suffix."""
    format: Literal["auto", "vissl", "timm"] = "auto"
    """Layout of src; 'auto' recognises VISSL (classy_state_dict or _feature_blocks. keys) and timm (stem.conv.weight
    or conv1.weight)."""
    arch: str | None = None
    """Architecture to map onto, e.g. regnety_32gf; null: the one whose keys and shapes match exactly."""
    classes: str | None = None
    """Names of a fine-tuned classifier's outputs: a text file (one per line) or a JSON list; null: 0, 1, ..."""
    skip_unknown: bool = False
    """Import although some keys have no place in openseer's model (they are printed and recorded in the file's
    metadata)."""

    def validate(self) -> None:
        if not self.src or not self.dst:
            raise ConfigError(
                "import-weights needs a source and a destination (src=FILE dst=FILE.safetensors)"
            )


@dataclass
class ExportConfig:
    checkpoint: str = ""
    """Weights: a run folder or ckpt-*.pt, the output of openseer linear/finetune, a file written by import-weights,
    or a VISSL/timm file."""
    dst: str = ""
    """Output file."""
    format: Literal["safetensors", "torchscript", "onnx", "torchvision"] | None = None
    """'safetensors' (tensors, the description in the metadata and a .yaml), 'torchscript' (traced), 'onnx' (needs pip install
    'openseer[export]') or 'torchvision' (the state dict of torchvision's regnet_y_* of the same size); null:
    from dst's suffix (.safetensors; .pt or .ts: torchscript; .onnx; .pth: torchvision)."""
    with_head: bool = False
    """Include the classifier of a fine-tuned checkpoint: the file then maps images to logits."""
    size: int | None = None
    """Input side used for tracing; null: the config's first crop size. ONNX files are fixed to it."""
    verify: bool = False
    """ONNX: run the file with onnxruntime on random images and print the relative error against PyTorch."""

    def validate(self) -> None:
        if not self.checkpoint or not self.dst:
            raise ConfigError("export needs weights and a destination (checkpoint=RUN_OR_FILE dst=FILE)")
        if self.format is None:
            suffix = Path(self.dst).suffix.lower()
            if suffix not in EXPORT_SUFFIXES:
                raise ConfigError(
                    f"export: cannot tell the format from the suffix of '{self.dst}'; name it "
                    f"({', '.join(EXPORT_SUFFIXES)}) or give format=safetensors|torchscript|onnx|torchvision"
                )
            self.format = EXPORT_SUFFIXES[suffix]  # type: ignore[assignment]
