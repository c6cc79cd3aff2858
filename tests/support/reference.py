"""The published recipes behind the large-scale presets, as data: every number the paper or the released config
fixes, where it is written, and what openseer's preset gives for it.

Sources were read at these commits: swav ``facebookresearch/swav@06b1b7c`` (main_swav.py, scripts/, src/) and
VISSL ``facebookresearch/vissl@09270ed`` (configs/, vissl/, projects/SEER/). A row whose source is a paper
(SEER RG-256GF: Goyal et al. 2021, "Self-supervised Pretraining of Visual Features in the Wild",
arXiv:2103.01988) states a number that no released config holds.

Each :class:`Row` names a quantity of :data:`QUANTITIES`, whose function reads openseer's value from a resolved
preset at the reference's scale (its number of processes and images per epoch). ``why`` is empty when openseer
matches the reference, and says why it deliberately differs otherwise. docs/gen_conformance.py renders
docs/conformance.md from this module; tests/test_conformance.py checks every row against the presets.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the functions below only read attributes of a resolved config
    from openseer.train.config import PretrainConfig

Value = str | int | float | bool

SWAV = "swav"  # facebookresearch/swav@06b1b7c
VISSL = "vissl"  # facebookresearch/vissl@09270ed
SEER_PAPER = "SEER paper (arXiv:2103.01988), pretraining details"
SWAV_400 = f"{SWAV} scripts/swav_400ep_pretrain.sh"
VISSL_SWAV = f"{VISSL} configs/config/pretrain/swav/swav_8node_resnet.yaml"
VISSL_10B = f"{VISSL} configs/config/pretrain/seer/models/regnet10B.yaml"
SEER_DOC = f"{VISSL} projects/SEER/MODEL_DOCUMENTATION.md"


@dataclass(frozen=True)
class Row:
    """One number of a reference recipe."""

    quantity: str
    """A key of :data:`QUANTITIES`."""
    value: Value
    """The reference's value, in the form :data:`QUANTITIES` gives openseer's."""
    source: str
    """Where the reference states it: repository file and line(s), or a paper."""
    why: str = ""
    """Empty when openseer matches; otherwise why openseer deliberately differs."""


@dataclass(frozen=True)
class Reference:
    """A released recipe and the openseer preset that reproduces it."""

    preset: str
    recipe: str
    world_size: int
    """Processes (GPUs) of the reference run: lr scaling, global batch and SyncBatchNorm groups assume it."""
    images_per_epoch: int
    """Training images per epoch of the reference run (steps per epoch = images // global batch)."""
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Quantity:
    label: str
    of: Callable[[PretrainConfig, Reference], Value]


def _num(x: float) -> str:
    return f"{x:g}"


def _global_batch(cfg: PretrainConfig, ref: Reference) -> int:
    return cfg.optim.batch_size * ref.world_size


def _scaled_lr(per_256: float) -> Callable[[PretrainConfig, Reference], float]:
    """An lr given per 256 images, at the reference's global batch (openseer scales all three linearly)."""
    return lambda cfg, ref: per_256 * _global_batch(cfg, ref) / 256


def planned_steps(cfg: PretrainConfig, ref: Reference) -> int:
    return cfg.optim.planned_steps(ref.images_per_epoch // _global_batch(cfg, ref))


def warmup_steps_of(cfg: PretrainConfig, ref: Reference) -> int:
    from openseer.optim.schedules import warmup_length

    o, planned = cfg.optim, planned_steps(cfg, ref)
    steps_per_epoch = ref.images_per_epoch // _global_batch(cfg, ref)
    return warmup_length(
        planned, planned, o.warmup_fraction, o.warmup_steps, o.warmup_epochs, steps_per_epoch
    )


def _trunk(cfg: PretrainConfig, ref: Reference) -> str:
    from openseer.models.regnet import REGNETY

    if cfg.model.arch in REGNETY:
        p = REGNETY[cfg.model.arch]
        return f"RegNetY depth {p.depth}, w0 {p.w0}, wa {_num(p.wa)}, wm {_num(p.wm)}, group width {p.group_width}"
    return {"resnet50": "ResNet-50", "resnet18": "ResNet-18"}[cfg.model.arch]


@functools.cache
def _feature_dim(arch: str) -> int:
    import torch

    from openseer.models.backbone import build_backbone

    with torch.device("meta"):  # no memory, even for the 10B trunk
        return int(build_backbone(arch).num_features)


def _head(cfg: PretrainConfig, ref: Reference) -> str:
    dims = [_feature_dim(cfg.model.arch), *cfg.model.head_hidden, cfg.model.out_dim]
    return "-".join(str(d) for d in dims)


def _sync_bn(cfg: PretrainConfig, ref: Reference) -> Value:
    p = cfg.parallel
    if not p.sync_bn:
        return "off"
    return ref.world_size if p.sync_bn_group is None else min(ref.world_size, p.sync_bn_group)


def _lars_default(name: str) -> Value:
    from openseer.optim.lars import LARS

    return inspect.signature(LARS).parameters[name].default


def _lars_clips(cfg: PretrainConfig, ref: Reference) -> bool:
    from openseer.optim.lars import LARS

    return "clip" in inspect.signature(LARS).parameters  # openseer's LARS only scales (apex clip=False)


def _scores_dtype(cfg: PretrainConfig, ref: Reference) -> str:
    """The dtype of the prototype scores the head returns under the preset's autocast (a tiny head, CPU)."""
    import contextlib

    import torch

    from openseer.models.head import SwAVHead

    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.run.precision)
    head = SwAVHead(8, [8], 4, 5, use_bn=False)
    context = torch.autocast("cpu", dtype=low) if low is not None else contextlib.nullcontext()
    with context, torch.no_grad():
        _, scores = head(torch.randn(3, 8))
    return str(scores.dtype).removeprefix("torch.")


def _conv_init(cfg: PretrainConfig, ref: Reference) -> str:
    from openseer.models.regnet import REGNETY

    per_group = "/groups" if cfg.model.arch in REGNETY else ""  # ResNet-50's convolutions are ungrouped
    return f"N(0, 2/fan_out), fan_out = k*k*out{per_group}"


def _blur_extent(cfg: PretrainConfig, ref: Reference) -> str:
    from openseer.data.multicrop import blur_kernel_size

    sizes = list(dict.fromkeys(c.size for c in cfg.crops))
    return ", ".join(f"{blur_kernel_size(s)} px at {s}" for s in sizes)


def _color(cfg: PretrainConfig, ref: Reference) -> str:
    a = cfg.augment
    s = a.color_strength
    jitter = ", ".join(_num(round(v, 6)) for v in (0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s))
    return f"jitter ({jitter}) p {_num(a.color_p)}, grey p {_num(a.grayscale_p)}"


QUANTITIES: dict[str, Quantity] = {
    "crops": Quantity(
        "Multi-crop (count x side)", lambda c, r: " + ".join(f"{x.count}x{x.size}" for x in c.crops)
    ),
    "crop_schedule": Quantity(
        "Crop sides over the run",
        lambda c, r: (
            "fixed"
            if c.progressive.start_scale >= 1
            else f"{_num(c.progressive.start_scale)}x growing to 1x over {_num(c.progressive.until)} of the run"
        ),
    ),
    "crop_scales": Quantity(
        "Crop scales (area fraction)",
        lambda c, r: " / ".join(f"{_num(x.scale[0])}-{_num(x.scale[1])}" for x in c.crops),
    ),
    "trunk": Quantity("Trunk", _trunk),
    "head": Quantity("Head widths (features-hidden-embedding)", _head),
    "head_bn": Quantity("BatchNorm in the head", lambda c, r: c.model.head_bn),
    "prototypes": Quantity("Prototypes", lambda c, r: c.model.prototypes),
    "temperature": Quantity(
        "Temperature",
        lambda c, r: (
            c.swav.temperature
            if c.swav.temperature_start is None
            else f"{_num(c.swav.temperature_start)} to {_num(c.swav.temperature)} (cosine over the run)"
        ),
    ),
    "epsilon": Quantity("Sinkhorn epsilon", lambda c, r: c.swav.epsilon),
    "sinkhorn_iters": Quantity("Sinkhorn iterations", lambda c, r: c.swav.sinkhorn_iters),
    "queue": Quantity(
        "Queue rows per process",
        lambda c, r: c.swav.local_queue_length(c.optim.batch_size, r.world_size),
    ),
    "freeze": Quantity("Prototypes frozen for (iterations)", lambda c, r: c.swav.freeze_prototypes_iters),
    "batch": Quantity("Images per process", lambda c, r: c.optim.batch_size),
    "global_batch": Quantity("Global batch", _global_batch),
    "peak_lr": Quantity("Peak lr", lambda c, r: _scaled_lr(c.optim.base_lr)(c, r)),
    "start_lr": Quantity("Warm-up start lr", lambda c, r: _scaled_lr(c.optim.start_lr)(c, r)),
    "final_lr": Quantity("Final lr (end of the cosine)", lambda c, r: _scaled_lr(c.optim.final_lr)(c, r)),
    "warmup_steps": Quantity("Warm-up steps", warmup_steps_of),
    "warmup_share": Quantity(
        "Warm-up share of the run", lambda c, r: warmup_steps_of(c, r) / planned_steps(c, r)
    ),
    "epochs": Quantity("Epochs", lambda c, r: c.optim.epochs),
    "weight_decay": Quantity("Weight decay", lambda c, r: c.optim.weight_decay),
    "momentum": Quantity("Momentum", lambda c, r: c.optim.momentum),
    "lars_trust": Quantity("LARS trust coefficient", lambda c, r: c.optim.trust_coefficient),
    "lars_clip": Quantity("LARS clipping (apex clip)", _lars_clips),
    "lars_eps": Quantity("LARS eps", lambda c, r: _lars_default("eps")),
    "lars_scope": Quantity(
        "LARS adaptation and weight decay apply to",
        lambda c, r: "weights only" if c.optim.exclude_bias_and_norm else "every tensor",
    ),
    "sync_bn": Quantity("SyncBatchNorm group (processes)", _sync_bn),
    "activation_checkpointing": Quantity(
        "Activation checkpointing", lambda c, r: c.parallel.activation_checkpointing
    ),
    "sharding": Quantity("Data parallelism", lambda c, r: c.parallel.strategy.upper()),
    "precision": Quantity(
        "Mixed precision",
        lambda c, r: {"bf16": "bf16 autocast", "fp16": "fp16 autocast", "fp32": "none (fp32)"}[
            c.run.precision
        ],
    ),
    "scores_dtype": Quantity("Prototype scores computed in", _scores_dtype),
    "last_bn_init": Quantity(
        "Scale of each residual block's last BatchNorm at init",
        lambda c, r: 0.0 if c.model.zero_init_last_bn else 1.0,
    ),
    "conv_init": Quantity("Convolution init", _conv_init),
    "color": Quantity("Colour distortion", _color),
    "blur": Quantity(
        "Gaussian blur: probability, sigma range",
        lambda c, r: (
            f"p {_num(c.augment.blur_p)}, sigma {_num(c.augment.blur_sigma[0])}-{_num(c.augment.blur_sigma[1])}"
        ),
    ),
    "blur_extent": Quantity("Blur kernel extent", _blur_extent),
    "normalize_std": Quantity("Normalisation std", lambda c, r: ", ".join(_num(v) for v in c.augment.std)),
}

# The quantities every large-scale reference must state (the test checks that none is missing).
REQUIRED = tuple(QUANTITIES)

_BF16_WHY = (
    "bf16 keeps fp32's exponent range, so no loss scaling is needed, and runs at fp16's speed on the GPUs "
    "openseer targets (A100, H100); the prototype scores stay float32 (next row)"
)
_SCORES_WHY = (
    "float32 is at least as fine as the reference; the bf16 alternative (8 significant bits) would move "
    "score/epsilon by up to 0.04 near |score| = 1. VISSL's FSDP head (SEER 10B) keeps the prototypes in "
    "float32 for the same reason"
)
_BLUR_WHY = (
    "openseer's kernel side is SimCLR's 10% of the crop side (a fixed odd size that a batched tensor blur "
    "needs), so a 96-px crop cuts a sigma-2 Gaussian at +-4 px (2 sigma) where PIL's reaches +-5 px; the "
    "augmentation is owned by openseer.data and left as it is"
)
_CONV_WHY = (
    "timm divides the fan-out by the groups of a grouped convolution, VISSL does not; every such convolution "
    "is followed by BatchNorm and trained with LARS, whose step is relative to ||w||, so the initial scale of "
    "these weights does not change what is learnt"
)
_PIL_EXTENT = "set by sigma only (PIL GaussianBlur, 3 box blurs): +-5 px at sigma 2, whatever the crop side"


REFERENCES: tuple[Reference, ...] = (
    Reference(
        preset="swav-rn50",
        recipe="SwAV ResNet-50, 400 epochs, 2x224 + 6x96, 64 GPUs (swav scripts/swav_400ep_pretrain.sh)",
        world_size=64,
        images_per_epoch=1_281_167,  # ImageNet-1k train
        rows=(
            Row("crops", "2x224 + 6x96", f"{SWAV_400}:28-29"),
            Row(
                "crop_schedule",
                "fixed",
                f"{SWAV} src/multicropdataset.py:42-54,59 (built once at size_crops, used every epoch)",
            ),
            Row("crop_scales", "0.14-1 / 0.05-0.14", f"{SWAV_400}:30-31"),
            Row("trunk", "ResNet-50", f"{SWAV_400}:48"),
            Row("head", "2048-2048-128", f"{SWAV} main_swav.py:65,107; src/resnet50.py:205-210"),
            Row("head_bn", True, f"{SWAV} src/resnet50.py:205-210"),
            Row("prototypes", 3000, f"{SWAV_400}:37"),
            Row("temperature", 0.1, f"{SWAV_400}:33"),
            Row("epsilon", 0.05, f"{SWAV_400}:34"),
            Row("sinkhorn_iters", 3, f"{SWAV_400}:35"),
            Row(
                "queue", 0, f"{SWAV_400}:38; {SWAV} main_swav.py:213 (rounded to a multiple of batch x world)"
            ),
            Row("freeze", 313, f"{SWAV_400}:43"),
            Row("batch", 64, f"{SWAV_400}:40"),
            Row("global_batch", 4096, f"{SWAV_400}:10 (64 GPUs), :40"),
            Row("peak_lr", 4.8, f"{SWAV_400}:41"),
            Row("start_lr", 0.3, f"{SWAV_400}:46 (start_warmup, not scaled)"),
            Row("final_lr", 0.0048, f"{SWAV_400}:42"),
            Row("warmup_steps", 3120, f"{SWAV} main_swav.py:178 (len(train_loader) = 312, x 10 epochs)"),
            Row("warmup_share", 0.025, f"{SWAV_400}:39,45"),
            Row("epochs", 400, f"{SWAV_400}:39"),
            Row("weight_decay", 1e-6, f"{SWAV_400}:44"),
            Row("momentum", 0.9, f"{SWAV} main_swav.py:174"),
            Row("lars_trust", 0.001, f"{SWAV} main_swav.py:177"),
            Row("lars_clip", False, f"{SWAV} main_swav.py:177"),
            Row("lars_eps", 1e-8, f"apex LARC default (main_swav.py:177 passes none); {VISSL_SWAV}:84"),
            Row(
                "lars_scope",
                "every tensor",
                f"{SWAV} main_swav.py:171-177 (LARC over SGD(model.parameters()))",
            ),
            Row("sync_bn", 8, f"{SWAV_400}:50; {SWAV} main_swav.py:116,159-163"),
            Row("activation_checkpointing", False, f"{SWAV} main_swav.py (none)"),
            Row("sharding", "DDP", f"{SWAV} main_swav.py:191-194"),
            Row("precision", "fp16 (apex AMP O1)", f"{SWAV_400}:49; {SWAV} main_swav.py:186-187", _BF16_WHY),
            Row(
                "scores_dtype",
                "float16",
                f"{SWAV} main_swav.py:187 (apex O1 runs nn.Linear in fp16); src/resnet50.py:217",
                _SCORES_WHY,
            ),
            Row("last_bn_init", 1.0, f"{SWAV} src/resnet50.py:139,222-224 (zero_init_residual=False)"),
            Row("conv_init", "N(0, 2/fan_out), fan_out = k*k*out", f"{SWAV} src/resnet50.py:221"),
            Row(
                "color",
                "jitter (0.8, 0.8, 0.8, 0.2) p 0.8, grey p 0.2",
                f"{SWAV} src/multicropdataset.py:88-93",
            ),
            Row("blur", "p 0.5, sigma 0.1-2", f"{SWAV} src/multicropdataset.py:71"),
            Row("blur_extent", _PIL_EXTENT, f"{SWAV} src/multicropdataset.py:81-85", _BLUR_WHY),
            Row(
                "normalize_std",
                "0.228, 0.224, 0.225",
                f"{SWAV} src/multicropdataset.py:39",
                "0.229 is ImageNet's red std as torchvision and VISSL (swav_8node_resnet.yaml:37) use it; swav's "
                "0.228 differs in the third decimal only",
            ),
        ),
    ),
    Reference(
        preset="seer-rg256gf",
        recipe="SEER RegNetY-256GF, 1 epoch of ~1B images, 512 GPUs (Goyal et al. 2021; VISSL)",
        world_size=512,
        images_per_epoch=1_000_000_000,
        rows=(
            Row(
                "crops",
                "2x224 + 4x96",
                f"{SEER_PAPER}; {VISSL} configs/config/pretrain/swav/transforms/"
                "multicrop_6crop_2x224_4x96.yaml:8-9",
            ),
            Row(
                "crop_schedule",
                "fixed",
                f"{VISSL} configs/config/pretrain/swav/transforms/multicrop_6crop_2x224_4x96.yaml:8-9 "
                "(the same crops for the whole run)",
            ),
            Row(
                "crop_scales",
                "0.14-1 / 0.05-0.14",
                f"{VISSL} configs/config/pretrain/swav/transforms/multicrop_6crop_2x224_4x96.yaml:10",
            ),
            Row(
                "trunk",
                "RegNetY depth 27, w0 640, wa 230.83, wm 2.53, group width 373",
                f"{VISSL} configs/config/pretrain/swav/models/regnet256Gf_1.yaml:7-11",
            ),
            Row(
                "head",
                "10444-8192-8192-256",
                f"{VISSL} configs/config/pretrain/swav/heads/d10444_d8192_d8192_d256_proto16k.yaml:6",
            ),
            Row(
                "head_bn",
                False,
                f"{VISSL} configs/config/pretrain/swav/heads/d10444_d8192_d8192_d256_proto16k.yaml:6",
            ),
            Row(
                "prototypes",
                16000,
                f"{VISSL} configs/config/pretrain/swav/heads/d10444_d8192_d8192_d256_proto16k.yaml:6",
            ),
            Row("temperature", 0.1, f"{SEER_PAPER}; {VISSL_SWAV}:69"),
            Row("epsilon", 0.05, SEER_PAPER),
            Row("sinkhorn_iters", 10, SEER_PAPER),
            Row("queue", 0, f"{VISSL_SWAV}:75-77"),
            Row("freeze", 313, f"{VISSL_SWAV}:56-58 (VISSL's SwAV base config)"),
            Row("batch", 16, f"{SEER_PAPER}; {SEER_DOC}:113,119 (8192 images on 512 GPUs)"),
            Row("global_batch", 8192, f"{SEER_DOC}:113"),
            Row("peak_lr", 9.6, f"{SEER_DOC}:114"),
            Row(
                "start_lr", 0.15, f"{SEER_PAPER}; {VISSL} vissl/utils/hydra_config.py:243-247 (0.3 x 128/256)"
            ),
            Row(
                "final_lr",
                0.0096,
                f"{SEER_PAPER}; {VISSL} vissl/utils/hydra_config.py:299-303, "
                "swav_8node_resnet.yaml:108-110 (peak x 0.0048/4.8)",
            ),
            Row("warmup_steps", 8000, SEER_PAPER),
            Row("warmup_share", 8000 / 122_070, f"{SEER_PAPER} (8K of 1B/8192 = 122,070 iterations)"),
            Row("epochs", 1, f"{SEER_DOC}:116"),
            Row("weight_decay", 1e-5, f"{SEER_DOC}:117"),
            Row("momentum", 0.9, f"{VISSL_SWAV}:86"),
            Row("lars_trust", 0.001, f"{VISSL_SWAV}:83"),
            Row("lars_clip", False, f"{VISSL_SWAV}:82"),
            Row("lars_eps", 1e-8, f"{VISSL_SWAV}:84"),
            Row(
                "lars_scope", "every tensor", f"{VISSL_SWAV}:80,95-96 (regularize_bn, regularize_bias: True)"
            ),
            Row("sync_bn", 64, SEER_PAPER),
            Row("activation_checkpointing", True, SEER_PAPER),
            Row(
                "sharding",
                "DDP",
                f"{VISSL} configs/config/pretrain/swav/models/regnet256Gf_1.yaml:5 (trunk "
                "'regnet', not 'regnet_fsdp')",
            ),
            Row("precision", "fp16 (apex AMP O1)", f"{SEER_DOC}:120", _BF16_WHY),
            Row(
                "scores_dtype",
                "float16",
                f"{SEER_DOC}:120 (apex O1 runs nn.Linear in fp16); {VISSL} "
                "vissl/models/heads/swav_prototypes_head.py:99,127",
                _SCORES_WHY,
            ),
            Row(
                "last_bn_init", 1.0, f"{VISSL} vissl/models/trunks/regnet_fsdp.py:54-68 (VISSL's RegNet init)"
            ),
            Row(
                "conv_init",
                "N(0, 2/fan_out), fan_out = k*k*out",
                f"{VISSL} vissl/models/trunks/regnet_fsdp.py:61-64",
                _CONV_WHY,
            ),
            Row(
                "color",
                "jitter (0.8, 0.8, 0.8, 0.2) p 0.8, grey p 0.2",
                f"{VISSL} configs/config/pretrain/"
                "swav/transforms/multicrop_6crop_2x224_4x96.yaml:13-14 (ImgPilColorDistortion strength 1)",
            ),
            Row(
                "blur",
                "p 0.5, sigma 0.1-2",
                f"{VISSL} configs/config/pretrain/swav/transforms/multicrop_6crop_2x224_4x96.yaml:15-18",
            ),
            Row(
                "blur_extent",
                _PIL_EXTENT,
                f"{VISSL} configs/config/pretrain/swav/transforms/"
                "multicrop_6crop_2x224_4x96.yaml:15-18 (ImgPilGaussianBlur)",
                _BLUR_WHY,
            ),
            Row(
                "normalize_std",
                "0.229, 0.224, 0.225",
                f"{VISSL} configs/config/pretrain/swav/transforms/multicrop_6crop_2x224_4x96.yaml:20-22",
            ),
        ),
    ),
    Reference(
        preset="seer-10b",
        recipe="SEER RegNetY-10B, 1 epoch of ~1B images, 496 GPUs (VISSL regnet10B.yaml over swav_8node_resnet.yaml)",
        world_size=496,
        images_per_epoch=1_000_000_000,
        rows=(
            Row("crops", "2x160 + 4x96", f"{VISSL_10B}:11-12"),
            Row("crop_schedule", "fixed", f"{VISSL_10B}:11-12 (the same crops for the whole run)"),
            Row("crop_scales", "0.14-1 / 0.05-0.14", f"{VISSL_10B}:13"),
            Row(
                "trunk",
                "RegNetY depth 27, w0 1744, wa 620.83, wm 2.52, group width 1010",
                f"{VISSL_10B}:33-37",
            ),
            Row("head", "28280-8192-8192-256", f"{VISSL_10B}:42"),
            Row("head_bn", False, f"{VISSL_10B}:43"),
            Row("prototypes", 16000, f"{VISSL_10B}:44,70"),
            Row("temperature", 0.1, f"{VISSL_SWAV}:69 (inherited)"),
            Row("epsilon", 0.03, f"{VISSL_10B}:67"),
            Row("sinkhorn_iters", 10, f"{VISSL_10B}:66"),
            Row("queue", 0, f"{VISSL_SWAV}:75-77 (inherited)"),
            Row("freeze", 313, f"{VISSL_SWAV}:56-58 (inherited)"),
            Row("batch", 16, f"{VISSL_10B}:7"),
            Row("global_batch", 7936, f"{VISSL_10B}:7,91-92 (62 nodes x 8 GPUs x 16)"),
            Row("peak_lr", 9.3, f"{VISSL_10B}:81-83 (0.3 x 7936/256); {SEER_DOC}:128"),
            Row(
                "start_lr", 0.15, f"{VISSL} vissl/utils/hydra_config.py:243-247 (0.3 x one node's 128 / 256)"
            ),
            Row(
                "final_lr",
                0.0093,
                f"{VISSL} vissl/utils/hydra_config.py:299-303, swav_8node_resnet.yaml:108-110",
            ),
            Row("warmup_steps", 5500, f"{VISSL_10B}:84 (0.043648 x 1B/7936 = 126,008 iterations)"),
            Row("warmup_share", 0.043648, f"{VISSL_10B}:84"),
            Row("epochs", 1, f"{VISSL_10B}:76"),
            Row("weight_decay", 1e-5, f"{VISSL_10B}:75"),
            Row("momentum", 0.9, f"{VISSL_SWAV}:86 (inherited)"),
            Row("lars_trust", 0.001, f"{VISSL_SWAV}:83 (inherited; LARC on: {VISSL_10B}:73)"),
            Row("lars_clip", False, f"{VISSL_SWAV}:82 (inherited)"),
            Row("lars_eps", 1e-8, f"{VISSL_SWAV}:84 (inherited)"),
            Row(
                "lars_scope",
                "every tensor",
                f"{VISSL_10B}:74 (one parameter group); {VISSL} "
                "vissl/optimizers/param_groups/default.py:159-169, vissl/optimizers/larc_fsdp.py:128-158",
            ),
            Row("sync_bn", 8, f"{VISSL_10B}:56-58; {VISSL_SWAV}:62 (GROUP_SIZE 8, inherited)"),
            Row("activation_checkpointing", True, f"{VISSL_10B}:38,62-63"),
            Row("sharding", "FSDP", f"{VISSL_10B}:4,31,47-52"),
            Row("precision", "fp16 (FSDP compute dtype, torch AMP)", f"{VISSL_10B}:50-52,59-61", _BF16_WHY),
            Row("scores_dtype", "float32", f"{VISSL} vissl/models/heads/swav_prototypes_head.py:143-171"),
            Row("last_bn_init", 1.0, f"{VISSL} vissl/models/trunks/regnet_fsdp.py:54-68"),
            Row(
                "conv_init",
                "N(0, 2/fan_out), fan_out = k*k*out",
                f"{VISSL} vissl/models/trunks/regnet_fsdp.py:61-64",
                _CONV_WHY,
            ),
            Row("color", "jitter (0.8, 0.8, 0.8, 0.2) p 0.8, grey p 0.2", f"{VISSL_10B}:16-17"),
            Row("blur", "p 0.5, sigma 0.1-2", f"{VISSL_10B}:18-21"),
            Row("blur_extent", _PIL_EXTENT, f"{VISSL_10B}:18-21 (ImgPilGaussianBlur)", _BLUR_WHY),
            Row("normalize_std", "0.229, 0.224, 0.225", f"{VISSL_10B}:23-25"),
        ),
    ),
)


def same(ours: Value, theirs: Value) -> bool:
    """Equal, numbers to 1e-3 relative (lrs are scaled by the global batch and may round in the last digits)."""
    if isinstance(ours, bool) or isinstance(theirs, bool):
        return ours is theirs
    if isinstance(ours, int | float) and isinstance(theirs, int | float):
        return math.isclose(ours, theirs, rel_tol=1e-3, abs_tol=1e-12)
    return ours == theirs


def reference(preset: str) -> Reference:
    for ref in REFERENCES:
        if ref.preset == preset:
            return ref
    raise KeyError(f"no reference recipe for preset {preset!r}")
