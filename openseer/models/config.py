"""The typed configuration of a SwAV model (backbone and head): ``model.*`` in every config and weights file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from openseer.config import Auto, ConfigError


@dataclass
class ModelConfig:
    arch: str = "resnet50"
    """A RegNetY size (regnety_200mf ... regnety_256gf, regnety_10b), resnet50 or resnet18; see
    `openseer.models`."""
    stem: Literal["imagenet", "small"] = "imagenet"
    """'small': a stride-1 3x3 stem for inputs of 64 px or less."""
    output_stride: int | None = None
    """Total stride of a RegNet trunk: None keeps its layout's (32 with the ImageNet stem, 16 with 'small'); a
    smaller power of two takes the stride out of the last stages, so the last stage sees a larger map (8 with
    'small': a 32-px crop reaches it as 4x4 instead of 2x2). Shapes of the weights do not change."""
    head_hidden: list[int] = field(default_factory=lambda: [2048])
    """Widths of the projection MLP's hidden layers, each a Linear then ReLU (SwAV RN50: [2048]; SEER:
    [8192, 8192]); []: a single Linear layer to the embedding."""
    head_bn: bool = True
    """BatchNorm after each hidden Linear layer of the projection MLP (SwAV: true; SEER: false)."""
    out_dim: int = 128
    """Dimension of the L2-normalised embedding z that the prototypes score (SwAV: 128; SEER: 256)."""
    prototypes: int | Auto = 3000
    """Number K of prototypes, unit vectors of out_dim (SwAV ImageNet: 3000; SEER: 16000). 'auto': sized
    from the data when pretraining starts, about one per 400 training images within 30..3000, fewer where the
    rows of a code computation (batch and queue) are too few for them (openseer.train.sizing)."""
    crop_pass: Literal["by_size", "padded"] = "by_size"
    """How the crops of a step go through the trunk. 'by_size': one pass per crop size (swav, and VISSL's default
    collator). 'padded': one pass over all of them, the smaller crops zero-padded (bottom and right) to the largest
    and their padding cut from the last feature map before the average pool, as VISSL trains SEER 10B
    (create_multidimensional_tensor): under FSDP every block's weights are gathered once per step instead of once
    per size, at the price of computing the padding. A padded small crop's features differ from its own pass's
    (the trunk sees the padding at its edges): the seer-10b preset takes it to train as VISSL did."""
    channels_last: bool = True
    """Channels-last (NHWC) memory format for the model and the crops fed to it; false: contiguous NCHW."""
    small_map_kernels: bool = True
    """On a CPU, 1x1 convolutions over maps of at most 8x8 run as matrix products, and grouped convolutions with
    narrow groups over such maps in fp32 under bf16 autocast (the same function, faster kernels: see
    `openseer.models.small_maps`). False: every convolution runs oneDNN's convolution kernel."""
    zero_init_last_bn: bool = False
    """Start each residual block's last BatchNorm scale at 0, so every block begins as the identity (timm's
    default, Goyal et al. 2017). The references do not: swav's ResNet-50 (``zero_init_residual=False``) and
    VISSL's RegNet (BatchNorm weights 1, biases 0)."""

    def validate(self) -> None:
        from openseer.models.backbone import ARCHS  # imports timm: only once a config is being checked

        if self.arch not in ARCHS:
            raise ConfigError(
                f"config key 'model.arch': got {self.arch!r}, expected one of {', '.join(ARCHS)}"
            )
        if self.output_stride is not None:
            from openseer.models.regnet import REGNETY, output_strides

            if self.arch not in REGNETY:
                raise ConfigError(
                    f"config key 'model.output_stride': only RegNet trunks take it (model.arch is {self.arch!r})"
                )
            allowed = output_strides(self.stem)
            if self.output_stride not in allowed:
                raise ConfigError(
                    f"config key 'model.output_stride': got {self.output_stride}, expected one of "
                    f"{', '.join(map(str, allowed))} with model.stem={self.stem!r}"
                )
        if self.prototypes != "auto" and self.prototypes < 2:
            raise ConfigError(f"config key 'model.prototypes': got {self.prototypes}, expected >= 2 or auto")
        if self.out_dim < 1 or any(h < 1 for h in self.head_hidden):
            raise ConfigError("config keys 'model.out_dim' and 'model.head_hidden' must be positive")
