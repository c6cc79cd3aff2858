"""The published recipes behind the large-scale presets, as data: every number the paper or the released config
fixes, where it is written, and what openseer's preset gives for it.

Sources were read at these commits: swav ``facebookresearch/swav@06b1b7c`` (main_swav.py, scripts/, src/),
VISSL ``facebookresearch/vissl@09270ed`` (configs/, vissl/, projects/SEER/, MODEL_ZOO.md) and the libraries VISSL
runs on, fvcore ``facebookresearch/fvcore@3378afe`` (the parameter schedulers) and ClassyVision
``facebookresearch/ClassyVision@08a82e8`` (the RegNet trunks and the task's training progress). Where a behaviour
is computed by code rather than set by a number, the row cites that code (file:lines and the function). A row
whose source is a paper (SEER RG-256GF: Goyal et al. 2021, "Self-supervised Pretraining of Visual Features in the
Wild", arXiv:2103.01988) states a number that no released config holds; a row whose reference value is
:data:`NOT_RELEASED` is a number the run's releases never gave, and its ``why`` says what the preset takes.

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
FVCORE = "fvcore"  # facebookresearch/fvcore@3378afe
CLASSY = "ClassyVision"  # facebookresearch/ClassyVision@08a82e8
NOT_RELEASED = "not released"
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


def _schedule_shape(cfg: PretrainConfig, ref: Reference) -> str:
    """How warm-up and decay join, read off the schedule the preset builds at the reference's scale."""
    from openseer.optim.schedules import cosine_schedule

    o, total, warm = cfg.optim, planned_steps(cfg, ref), warmup_steps_of(cfg, ref)
    lr = cosine_schedule(o.base_lr, o.final_lr, total, warm, start=o.start_lr, shape=o.schedule_shape)
    after = lr[warm:]
    if bool((after == o.base_lr).all()):
        return "linear warm-up, then constant"
    if math.isclose(float(after[0]), o.base_lr, rel_tol=1e-12):
        return "linear warm-up, then a cosine from the peak over the steps after it"
    if math.isclose(float(lr[total // 2]), (o.base_lr + o.final_lr) / 2, rel_tol=1e-4):
        return "linear warm-up, then the cosine at the run's position (the warm-up replaces its start)"
    return "neither reference's shape"


def _crop_pass(cfg: PretrainConfig, ref: Reference) -> str:
    if cfg.model.crop_pass == "padded":
        return (
            "one pass: smaller crops zero-padded (bottom, right) to the largest, padding cut before the pool"
        )
    return "one pass per crop size"


@functools.cache
def stage_depths_of(arch: str) -> tuple[int, ...]:
    """Blocks per stage of a trunk (built on the meta device)."""
    import torch

    from openseer.models.backbone import build_backbone
    from openseer.train.parallel import stage_depths

    with torch.device("meta"):
        return tuple(stage_depths(build_backbone(arch)))


def _checkpointed_blocks(cfg: PretrainConfig, ref: Reference) -> str:
    """The block ranges (1-based, per stage) recomputed as one unit each, as openseer.train.parallel builds them."""
    from openseer.train.parallel import checkpoint_segments

    if not cfg.parallel.activation_checkpointing:
        return "none"
    stages = checkpoint_segments(stage_depths_of(cfg.model.arch), cfg.parallel.stage_checkpoints)
    return "; ".join(
        f"s{i} " + (", ".join(f"{a + 1}-{b}" if b - a > 1 else str(b) for a, b in ranges) or "none")
        for i, ranges in enumerate(stages, start=1)
    )


def _image_order(cfg: PretrainConfig, ref: Reference) -> str:
    from openseer.data.shards import SHUFFLE_BUFFER, ShardsConfig, is_shard_source

    if not is_shard_source(cfg.data.source):
        return "a new uniform permutation of all images every epoch"
    packed = "shuffled once when packed" if ShardsConfig().shuffle else "packed in listing order"
    return (
        f"shards {packed}, read through a {SHUFFLE_BUFFER:,}-image buffer, shard order reshuffled every epoch"
    )


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
    "schedule_shape": Quantity("Learning-rate curve", _schedule_shape),
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
    "checkpoint_granularity": Quantity("Blocks recomputed as one unit (per stage)", _checkpointed_blocks),
    "crop_pass": Quantity("Crops through the trunk", _crop_pass),
    "image_order": Quantity("Order of the training images", _image_order),
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
    "score/epsilon by up to 0.04 near |score| = 1. VISSL's FSDP head (SEER 10B) keeps the prototype weights in "
    "float32 for the same reason, though its autocast still computes their product in float16"
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
_SHARDS_WHY = (
    "a stream of tar shards is read front to back, and a permutation of all images each epoch needs random "
    "access to them; instead `openseer shards` writes the images in a seeded random order (recorded in "
    "shards.json; reading shards without that record warns), so each batch is still drawn from the whole set "
    "(tests/distributed/test_shard_stream.py)"
)
_CKPT_WHY = (
    "the paper says activations were checkpointed, not where; openseer recomputes each stage whole "
    "(parallel.stage_checkpoints null), which changes memory and time, not the numbers computed "
    "(tests/distributed/test_activation_checkpointing.py)"
)
_CKPT_UNRELEASED_WHY = (
    "whether and where activations were checkpointed was not released for this run; openseer recomputes each "
    "stage whole, which changes memory and time, not the numbers computed "
    "(tests/distributed/test_activation_checkpointing.py)"
)
_PIL_EXTENT = "set by sigma only (PIL GaussianBlur, 3 box blurs): +-5 px at sigma 2, whatever the crop side"

# where VISSL computes what its configs set (file:lines, function)
_V_LR = f"{VISSL} vissl/utils/hydra_config.py:342-384 (infer_learning_rate: base_value x global batch / 256)"
_V_START = (
    f"{VISSL} vissl/utils/hydra_config.py:227-268 (resolve_linear_schedule: the warm-up starts at base_value x "
    "one node's batch / 256)"
)
_V_END = (
    f"{VISSL} vissl/utils/hydra_config.py:298-303 (get_scaled_lr_scheduler: cosine end = peak x end/start)"
)
_V_COMPOSITE = (
    f"{FVCORE} fvcore/common/param_scheduler.py:408-424 (CompositeParamScheduler.__call__: 'rescaled' linear "
    f"warm-up, 'fixed' cosine at the global where); {CLASSY} classy_vision/tasks/classification_task.py:915-935 "
    "(where = step / steps of the run)"
)
_V_TEMP = (
    f"{VISSL} vissl/losses/swav_loss.py:261-270 (SwAVCriterion.forward: log_softmax(scores / temperature))"
)
_V_EPS = f"{VISSL} vissl/losses/swav_loss.py:209-215 (SwAVCriterion.forward: exp(scores / epsilon))"
_V_SINKHORN = f"{VISSL} vissl/losses/swav_loss.py:219-228 (SwAVCriterion.forward: distributed_sinkhornknopp)"
_V_QUEUE = (
    f"{VISSL} vissl/utils/hydra_config.py:505-511 (infer_losses_config: rounded down to the global batch)"
)
_V_FREEZE = f"{VISSL} vissl/hooks/state_update_hooks.py:222-252 (FreezeParametersHook.on_backward)"
_V_SYNC_BN = f"{VISSL} vissl/models/model_helpers.py:181-198 (convert_sync_bn: min(world size, GROUP_SIZE))"
_V_SCOPE = (
    f"{VISSL} vissl/optimizers/param_groups/default.py:32-53,113-170 (get_default_optimizer_param_groups: "
    "regularize_bn, regularize_bias)"
)
_V_APEX = f"{VISSL} vissl/trainer/train_task.py:812-820 (apex.amp.initialize with AMP_ARGS)"
_V_AUTOCAST = (
    f"{VISSL} vissl/trainer/train_steps/standard_train_step.py:72-80,192-198 (the forward pass under "
    "torch.cuda.amp.autocast)"
)
_V_BY_SIZE = (
    f"{VISSL} vissl/models/base_ssl_model.py:118-148 (multi_res_input_forward: one trunk pass per crop size; "
    "multicrop_collator without create_multidimensional_tensor, vissl/data/collators/multicrop_collator.py:52-53)"
)
_V_SAMPLER = (
    f"{VISSL} vissl/data/__init__.py:139,240-241 (get_sampler: torch's DistributedSampler, shuffled per epoch; "
    "USE_STATEFUL_DISTRIBUTED_SAMPLER left False, vissl/config/defaults.yaml:247)"
)
_V_CROPS = f"{VISSL} vissl/data/ssl_transforms/img_pil_to_multicrop.py:55-66 (ImgPilToMultiCrop)"
_V_COLOR = f"{VISSL} vissl/data/ssl_transforms/img_pil_color_distortion.py:40-49 (ImgPilColorDistortion)"
_V_BLUR = f"{VISSL} vissl/data/ssl_transforms/img_pil_gaussian_blur.py:35-44 (ImgPilGaussianBlur: PIL's blur)"
_V_FSDP_INIT = f"{VISSL} vissl/models/trunks/regnet_fsdp.py:54-77 (init_weights)"
_C_INIT = (
    f"{CLASSY} classy_vision/models/regnet.py:191-203 (RegNet.init_weights; VISSL's 'regnet' trunk builds "
    "ClassyVision's RegNet, vissl/models/trunks/regnet.py:52-61)"
)
_C_CONV = f"{CLASSY} classy_vision/models/regnet.py:194-197 (RegNet.init_weights)"
_SEER_CROPS = f"{VISSL} configs/config/pretrain/swav/transforms/multicrop_6crop_2x224_4x96.yaml"
_SEER_BASE = "VISSL's SwAV base config, which its SEER runs build on; this run's own value was not released"
_V_SHAPE = "linear warm-up, then the cosine at the run's position (the warm-up replaces its start)"
_S_SHAPE = "linear warm-up, then a cosine from the peak over the steps after it"
_V_ORDER = "a new uniform permutation of all images every epoch"

# the released SEER checkpoints whose names spell out their runs (MODEL_ZOO.md, projects/SEER/README.md)
ZOO = f"{VISSL} MODEL_ZOO.md"
_RG128_NAME = f"{ZOO}:242 (swav_ig1b_regnet128Gf_cnstant_bs32_node16_sinkhorn10_proto16k_syncBN64_warmup8k)"
_RG128_HEAD = f"{VISSL} configs/config/pretrain/swav/heads/d7392_d8192_d8192_d256_proto16k.yaml:6"
_RG128_BATCH = f"{VISSL} configs/config/pretrain/swav/optimization/bs32_16nodes.yaml:5-8"


# rows every SEER run up to RG-256GF shares: its augmentation, precision, trunk code and sampler
_SEER_SHARED = (
    Row("crop_scales", "0.14-1 / 0.05-0.14", f"{_SEER_CROPS}:10"),
    Row("crop_pass", "one pass per crop size", _V_BY_SIZE),
    Row("image_order", _V_ORDER, _V_SAMPLER),
    Row("precision", "fp16 (apex AMP O1)", f"{SEER_DOC}:120; {_V_APEX}", _BF16_WHY),
    Row(
        "scores_dtype",
        "float16",
        f"{SEER_DOC}:120 (apex O1 runs nn.Linear in fp16); {VISSL} "
        "vissl/models/heads/swav_prototypes_head.py:99,127 (SwAVPrototypesHead: the prototypes an nn.Linear)",
        _SCORES_WHY,
    ),
    Row("last_bn_init", 1.0, _C_INIT),
    Row("conv_init", "N(0, 2/fan_out), fan_out = k*k*out", _C_CONV, _CONV_WHY),
    Row("color", "jitter (0.8, 0.8, 0.8, 0.2) p 0.8, grey p 0.2", f"{_SEER_CROPS}:13-14; {_V_COLOR}"),
    Row("blur", "p 0.5, sigma 0.1-2", f"{_SEER_CROPS}:15-18; {_V_BLUR}"),
    Row("blur_extent", _PIL_EXTENT, _V_BLUR, _BLUR_WHY),
    Row("normalize_std", "0.229, 0.224, 0.225", f"{_SEER_CROPS}:20-22"),
)


def _ordered(*rows: Row) -> tuple[Row, ...]:
    """Rows in the order of :data:`QUANTITIES`."""
    return tuple(sorted(rows, key=lambda row: list(QUANTITIES).index(row.quantity)))


def _seer_family(preset: str, recipe: str, rows: list[Row]) -> Reference:
    """A SEER size below RG-256GF on 128 GPUs: what its own releases give (``rows``), over what every such run
    shares (what VISSL's model documentation says of the series, and VISSL's SwAV base config that its SEER runs
    build on)."""
    common = [
        Row("crops", "2x224 + 4x96", f"{SEER_DOC}:121 ('2x224 + 4x196', the series); {_V_CROPS}"),
        Row("crop_schedule", "fixed", f"{_V_CROPS} (the same crops for the whole run)"),
        Row("temperature", 0.1, f"{VISSL_SWAV}:69 ({_SEER_BASE}); {_V_TEMP}"),
        Row("epsilon", 0.05, f"{VISSL_SWAV}:73 ({_SEER_BASE}); {_V_EPS}"),
        Row("queue", 0, f"{VISSL_SWAV}:75-77 ({_SEER_BASE}); {_V_QUEUE}"),
        Row("freeze", 313, f"{VISSL_SWAV}:56-58 ({_SEER_BASE}); {_V_FREEZE}"),
        Row(
            "schedule_shape",
            _V_SHAPE,
            f"{SEER_DOC}:115,118; {VISSL_SWAV}:103-112 (composite, interval_scaling [rescaled, fixed]); {_V_COMPOSITE}",
        ),
        Row("epochs", 1, f"{SEER_DOC}:116"),
        Row("weight_decay", 1e-5, f"{SEER_DOC}:117"),
        Row("momentum", 0.9, f"{VISSL_SWAV}:86 ({_SEER_BASE})"),
        Row("lars_trust", 0.001, f"{VISSL_SWAV}:83 ({_SEER_BASE})"),
        Row("lars_clip", False, f"{VISSL_SWAV}:82 ({_SEER_BASE})"),
        Row("lars_eps", 1e-8, f"{VISSL_SWAV}:84 ({_SEER_BASE})"),
        Row("lars_scope", "every tensor", f"{VISSL_SWAV}:95-96 ({_SEER_BASE}); {_V_SCOPE}"),
        Row(
            "activation_checkpointing",
            NOT_RELEASED,
            f"{SEER_DOC}:110-122 (not among the settings released for the series)",
            "not released for this run; on in openseer, as for the larger SEER presets: it changes memory and "
            "time, not the numbers computed",
        ),
        Row(
            "checkpoint_granularity",
            NOT_RELEASED,
            f"{SEER_DOC}:110-122 (not among them)",
            _CKPT_UNRELEASED_WHY,
        ),
        *_SEER_SHARED,
    ]
    merged = {row.quantity: row for row in common} | {row.quantity: row for row in rows}
    return Reference(
        preset=preset,
        recipe=recipe,
        world_size=128,
        images_per_epoch=1_000_000_000,
        rows=tuple(merged[q] for q in QUANTITIES if q in merged),
    )


def _unreleased(quantity: str, source: str, why: str) -> Row:
    return Row(quantity, NOT_RELEASED, source, f"not released for this run; {why}")


_AS_RG128 = "as the RG-128GF run's released name gives it (MODEL_ZOO.md:242), so that the SEER sizes compare"


def _unreleased_recipe(zoo_line: int, batch_why: str) -> list[Row]:
    """The rows of a SEER run whose releases give only the trunk, the head and the checkpoint's name."""
    name = f"{ZOO}:{zoo_line} (the checkpoint's name holds no setting of the run)"
    batch = f"{SEER_DOC}:113,119 (8,192 on 512 GPUs: the RG-256GF run's)"
    return [
        _unreleased("sinkhorn_iters", name, f"10 {_AS_RG128}"),
        _unreleased("batch", batch, batch_why),
        _unreleased("global_batch", batch, f"4,096 (32 x 128 GPUs) {_AS_RG128}"),
        _unreleased(
            "peak_lr", f"{SEER_DOC}:114; {_V_LR}", "0.3 per 256 images (documented) at a batch of 4,096"
        ),
        _unreleased("start_lr", _V_START, "VISSL's rule, 0.3 x one node's 8 x 32 images / 256"),
        _unreleased("final_lr", f"{VISSL_SWAV}:108-110; {_V_END}", "VISSL's base config's end, peak / 1000"),
        _unreleased("warmup_steps", name, f"8,000 steps {_AS_RG128}"),
        _unreleased("warmup_share", name, "8,000 of the 244,140 steps of one epoch at a batch of 4,096"),
        _unreleased("sync_bn", name, f"groups of 64 {_AS_RG128}"),
    ]


_SW_LOOP = f"{SWAV} main_swav.py:259-330 (train)"

REFERENCES: tuple[Reference, ...] = (
    Reference(
        preset="swav-rn50",
        recipe="SwAV ResNet-50, 400 epochs, 2x224 + 6x96, 64 GPUs (swav scripts/swav_400ep_pretrain.sh)",
        world_size=64,
        images_per_epoch=1_281_167,  # ImageNet-1k train
        rows=(
            Row(
                "crops",
                "2x224 + 6x96",
                f"{SWAV_400}:28-29; {SWAV} src/multicropdataset.py:40-54 (MultiCropDataset)",
            ),
            Row(
                "crop_schedule",
                "fixed",
                f"{SWAV} src/multicropdataset.py:42-54,59 (built once at size_crops, used every epoch)",
            ),
            Row(
                "crop_scales", "0.14-1 / 0.05-0.14", f"{SWAV_400}:30-31; {SWAV} src/multicropdataset.py:42-46"
            ),
            Row("crop_pass", "one pass per crop size", f"{SWAV} src/resnet50.py:308-323 (ResNet.forward)"),
            Row("trunk", "ResNet-50", f"{SWAV_400}:48"),
            Row("head", "2048-2048-128", f"{SWAV} main_swav.py:65,107; src/resnet50.py:205-210"),
            Row("head_bn", True, f"{SWAV} src/resnet50.py:205-210"),
            Row("prototypes", 3000, f"{SWAV_400}:37; {SWAV} src/resnet50.py:213-217"),
            Row("temperature", 0.1, f"{SWAV_400}:33; {SWAV} main_swav.py:312 (train: output / temperature)"),
            Row("epsilon", 0.05, f"{SWAV_400}:34; {SWAV} main_swav.py:354-355 (distributed_sinkhorn)"),
            Row("sinkhorn_iters", 3, f"{SWAV_400}:35; {SWAV} main_swav.py:364 (distributed_sinkhorn)"),
            Row(
                "queue", 0, f"{SWAV_400}:38; {SWAV} main_swav.py:213 (rounded to a multiple of batch x world)"
            ),
            Row("freeze", 313, f"{SWAV_400}:43; {SWAV} main_swav.py:325-328 (train)"),
            Row("batch", 64, f"{SWAV_400}:40"),
            Row("global_batch", 4096, f"{SWAV_400}:10 (64 GPUs), :40"),
            Row("peak_lr", 4.8, f"{SWAV_400}:41; {SWAV} main_swav.py:178-181 (base_lr, not scaled)"),
            Row("start_lr", 0.3, f"{SWAV_400}:46 (start_warmup, not scaled); {SWAV} main_swav.py:178"),
            Row("final_lr", 0.0048, f"{SWAV_400}:42; {SWAV} main_swav.py:180-181"),
            Row("warmup_steps", 3120, f"{SWAV} main_swav.py:178 (len(train_loader) = 312, x 10 epochs)"),
            Row("warmup_share", 0.025, f"{SWAV_400}:39,45"),
            Row(
                "schedule_shape",
                _S_SHAPE,
                f"{SWAV} main_swav.py:178-182 (np.linspace, then the cosine over iters)",
            ),
            Row("epochs", 400, f"{SWAV_400}:39"),
            Row("weight_decay", 1e-6, f"{SWAV_400}:44; {SWAV} main_swav.py:171-176"),
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
            Row("checkpoint_granularity", "none", f"{SWAV} main_swav.py (none)"),
            Row("sharding", "DDP", f"{SWAV} main_swav.py:191-194"),
            Row("image_order", _V_ORDER, f"{SWAV} main_swav.py:138,223 (DistributedSampler, set_epoch)"),
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
                f"{SWAV} src/multicropdataset.py:88-93 (get_color_distortion)",
            ),
            Row("blur", "p 0.5, sigma 0.1-2", f"{SWAV} src/multicropdataset.py:71 (PILRandomGaussianBlur)"),
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
    _seer_family(
        "seer-rg32gf",
        "SEER RegNetY-32GF, 1 epoch of ~1B images (VISSL model zoo: seer_regnet32gf_model_iteration244000); its "
        "batch was not released, 128 GPUs x 32 assumed",
        [
            Row(
                "trunk",
                "RegNetY depth 20, w0 232, wa 115.89, wm 2.53, group width 232",
                f"{VISSL} configs/config/benchmark/nearest_neighbor/models/seer/regnet32gf.yaml:7 (regnet_y_32gf); "
                f"{CLASSY} classy_vision/models/regnet.py:282-290 (RegNetY32gf)",
            ),
            Row(
                "head",
                "3712-4096-4096-256",
                f"{VISSL} configs/config/benchmark/nearest_neighbor/models/seer/regnet32gf.yaml:10 (the released "
                "weights evaluated with their head)",
            ),
            Row(
                "head_bn",
                True,
                f"{VISSL} configs/config/benchmark/nearest_neighbor/models/seer/regnet32gf.yaml:10",
            ),
            _unreleased(
                "prototypes",
                f"{VISSL} configs/config/benchmark/nearest_neighbor/models/seer/regnet32gf.yaml:10 (num_clusters [])",
                f"16,000 {_AS_RG128}",
            ),
            *_unreleased_recipe(
                240,
                "32 images on each of 128 GPUs as the RG-128GF run (bs32_16nodes.yaml): one epoch of 1B images is "
                "then 244,140 steps, which the released checkpoint's iteration 244,000 fits (MODEL_ZOO.md:240); "
                "the documentation's 8,192 would make it two epochs",
            ),
            Row(
                "sharding",
                "DDP",
                f"{VISSL} configs/config/benchmark/nearest_neighbor/models/seer/regnet32gf.yaml:5 (trunk 'regnet'; "
                "FSDP came with the 10B run, projects/SEER/README.md:121)",
            ),
        ],
    ),
    _seer_family(
        "seer-rg64gf",
        "SEER RegNetY-64GF, 1 epoch of ~1B images (VISSL model zoo: seer_regnet64gf_model_final_checkpoint_phase0); "
        "its batch was not released, 128 GPUs x 32 assumed",
        [
            Row(
                "trunk",
                "RegNetY depth 20, w0 352, wa 147.48, wm 2.4, group width 328",
                f"{VISSL} configs/config/benchmark/nearest_neighbor/models/seer/regnet64gf_3.yaml:7-11",
            ),
            Row(
                "head",
                "4920-8192-8192-256",
                f"{VISSL} configs/config/benchmark/nearest_neighbor/models/seer/regnet64gf_3.yaml:14 (the released "
                "weights evaluated with their head)",
            ),
            Row(
                "head_bn",
                False,
                f"{VISSL} configs/config/benchmark/nearest_neighbor/models/seer/regnet64gf_3.yaml:14",
            ),
            _unreleased(
                "prototypes",
                f"{VISSL} configs/config/benchmark/nearest_neighbor/models/seer/regnet64gf_3.yaml:14 (num_clusters [])",
                f"16,000 {_AS_RG128}",
            ),
            *_unreleased_recipe(
                241,
                "32 images on each of 128 GPUs as the RG-128GF run (bs32_16nodes.yaml); the checkpoint's name says "
                "only that its one epoch ended (phase0, MODEL_ZOO.md:241)",
            ),
            Row(
                "sharding",
                "DDP",
                f"{VISSL} configs/config/benchmark/nearest_neighbor/models/seer/regnet64gf_3.yaml:5 (trunk 'regnet'; "
                "FSDP came with the 10B run, projects/SEER/README.md:121)",
            ),
        ],
    ),
    _seer_family(
        "seer-rg128gf",
        "SEER RegNetY-128GF, 1 epoch of ~1B images, 128 GPUs (VISSL model zoo: "
        "swav_ig1b_regnet128Gf_cnstant_bs32_node16_sinkhorn10_proto16k_syncBN64_warmup8k; VISSL's SEER RegNet128 "
        "configs)",
        [
            Row(
                "trunk",
                "RegNetY depth 27, w0 456, wa 160.83, wm 2.52, group width 264",
                f"{VISSL} configs/config/pretrain/swav/models/regnet128Gf.yaml:8 (regnet_y_128gf); "
                f"{CLASSY} classy_vision/models/regnet.py:461-469 (RegNetY128gf)",
            ),
            Row("head", "7392-8192-8192-256", _RG128_HEAD),
            Row("head_bn", False, _RG128_HEAD),
            Row("prototypes", 16000, f"{_RG128_HEAD}; {_RG128_NAME}"),
            Row("sinkhorn_iters", 10, f"{_RG128_NAME}; {_V_SINKHORN}"),
            Row("batch", 32, f"{_RG128_BATCH}; {_RG128_NAME}"),
            Row("global_batch", 4096, f"{_RG128_BATCH} (32 x 16 nodes x 8 GPUs)"),
            Row("peak_lr", 4.8, f"{SEER_DOC}:114 (0.3 per 256 images); {_V_LR}"),
            Row("start_lr", 0.3, f"{_V_START} (0.3 x 8 x 32 / 256)"),
            Row(
                "final_lr",
                4.8,
                f"{_RG128_NAME} ('cnstant': the lr held after the warm-up, where the RG-256GF run's name, "
                f"{ZOO}:243, says 'cosine')",
            ),
            Row("warmup_steps", 8000, _RG128_NAME),
            Row("warmup_share", 8000 / 244_140, f"{_RG128_NAME} (8K of 1B/4096 = 244,140 iterations)"),
            Row("schedule_shape", "linear warm-up, then constant", f"{_RG128_NAME}; {_V_COMPOSITE}"),
            Row("epochs", 1, f"{SEER_DOC}:116; {_RG128_NAME} (model_final_checkpoint_phase0: one phase)"),
            Row("sync_bn", 64, f"{_RG128_NAME}; {_V_SYNC_BN}"),
            Row(
                "sharding",
                "DDP",
                f"{VISSL} configs/config/pretrain/swav/models/regnet128Gf.yaml:5 (trunk 'regnet', not 'regnet_fsdp')",
            ),
        ],
    ),
    Reference(
        preset="seer-rg256gf",
        recipe="SEER RegNetY-256GF, 1 epoch of ~1B images, 512 GPUs (Goyal et al. 2021; VISSL)",
        world_size=512,
        images_per_epoch=1_000_000_000,
        rows=_ordered(
            *_SEER_SHARED,
            Row("crops", "2x224 + 4x96", f"{SEER_PAPER}; {_SEER_CROPS}:8-9; {_V_CROPS}"),
            Row(
                "crop_schedule", "fixed", f"{_SEER_CROPS}:8-9 (the same crops for the whole run); {_V_CROPS}"
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
            Row("temperature", 0.1, f"{SEER_PAPER}; {VISSL_SWAV}:69; {_V_TEMP}"),
            Row("epsilon", 0.05, f"{SEER_PAPER}; {_V_EPS}"),
            Row("sinkhorn_iters", 10, f"{SEER_PAPER}; {_V_SINKHORN}"),
            Row("queue", 0, f"{VISSL_SWAV}:75-77; {_V_QUEUE}"),
            Row("freeze", 313, f"{VISSL_SWAV}:56-58 (VISSL's SwAV base config); {_V_FREEZE}"),
            Row("batch", 16, f"{SEER_PAPER}; {SEER_DOC}:113,119 (8192 images on 512 GPUs)"),
            Row("global_batch", 8192, f"{SEER_DOC}:113"),
            Row("peak_lr", 9.6, f"{SEER_DOC}:114; {_V_LR}"),
            Row("start_lr", 0.15, f"{SEER_PAPER}; {_V_START} (0.3 x 128/256)"),
            Row("final_lr", 0.0096, f"{SEER_PAPER}; {VISSL_SWAV}:108-110 (peak x 0.0048/4.8); {_V_END}"),
            Row("warmup_steps", 8000, SEER_PAPER),
            Row("warmup_share", 8000 / 122_070, f"{SEER_PAPER} (8K of 1B/8192 = 122,070 iterations)"),
            Row(
                "schedule_shape",
                _V_SHAPE,
                f"{VISSL_SWAV}:103-112 (composite, interval_scaling [rescaled, fixed]); {_V_COMPOSITE}",
            ),
            Row("epochs", 1, f"{SEER_DOC}:116"),
            Row("weight_decay", 1e-5, f"{SEER_DOC}:117"),
            Row("momentum", 0.9, f"{VISSL_SWAV}:86"),
            Row("lars_trust", 0.001, f"{VISSL_SWAV}:83"),
            Row("lars_clip", False, f"{VISSL_SWAV}:82"),
            Row("lars_eps", 1e-8, f"{VISSL_SWAV}:84"),
            Row(
                "lars_scope",
                "every tensor",
                f"{VISSL_SWAV}:80,95-96 (regularize_bn, regularize_bias: True); {_V_SCOPE}",
            ),
            Row("sync_bn", 64, f"{SEER_PAPER}; {_V_SYNC_BN}"),
            Row("activation_checkpointing", True, SEER_PAPER),
            Row(
                "checkpoint_granularity",
                NOT_RELEASED,
                f"{SEER_PAPER} (activation checkpointing, not where); {VISSL} "
                "configs/config/pretrain/swav/models/regnet256Gf_1.yaml (does not turn it on)",
                _CKPT_WHY,
            ),
            Row(
                "sharding",
                "DDP",
                f"{VISSL} configs/config/pretrain/swav/models/regnet256Gf_1.yaml:5 (trunk "
                "'regnet', not 'regnet_fsdp')",
            ),
        ),
    ),
    Reference(
        preset="seer-10b",
        recipe="SEER RegNetY-10B, 1 epoch of ~1B images, 496 GPUs (VISSL regnet10B.yaml over swav_8node_resnet.yaml)",
        world_size=496,
        images_per_epoch=1_000_000_000,
        rows=(
            Row("crops", "2x160 + 4x96", f"{VISSL_10B}:11-12; {_V_CROPS}"),
            Row(
                "crop_schedule", "fixed", f"{VISSL_10B}:11-12 (the same crops for the whole run); {_V_CROPS}"
            ),
            Row("crop_scales", "0.14-1 / 0.05-0.14", f"{VISSL_10B}:13"),
            Row(
                "crop_pass",
                "one pass: smaller crops zero-padded (bottom, right) to the largest, padding cut before the pool",
                f"{VISSL_10B}:26-27 (create_multidimensional_tensor); {VISSL} vissl/data/collators/"
                "collator_helper.py:76-106 (MultiDimensionalTensor.from_tensors: each crop in the top-left corner "
                "of zeros), vissl/models/model_helpers.py:390-456 (get_tunk_forward_interpolated_outputs: the mask "
                "resized to res5 by nearest, each crop's map cut before avgpool), "
                "vissl/models/trunks/regnet_fsdp.py:473-484 (_RegNetFSDP.forward)",
            ),
            Row(
                "trunk",
                "RegNetY depth 27, w0 1744, wa 620.83, wm 2.52, group width 1010",
                f"{VISSL_10B}:33-37",
            ),
            Row("head", "28280-8192-8192-256", f"{VISSL_10B}:42"),
            Row("head_bn", False, f"{VISSL_10B}:43"),
            Row("prototypes", 16000, f"{VISSL_10B}:44,70"),
            Row("temperature", 0.1, f"{VISSL_SWAV}:69 (inherited); {_V_TEMP}"),
            Row("epsilon", 0.03, f"{VISSL_10B}:67; {_V_EPS}"),
            Row("sinkhorn_iters", 10, f"{VISSL_10B}:66; {_V_SINKHORN}"),
            Row("queue", 0, f"{VISSL_SWAV}:75-77 (inherited); {_V_QUEUE}"),
            Row("freeze", 313, f"{VISSL_SWAV}:56-58 (inherited); {_V_FREEZE}"),
            Row("batch", 16, f"{VISSL_10B}:7"),
            Row("global_batch", 7936, f"{VISSL_10B}:7,91-92 (62 nodes x 8 GPUs x 16)"),
            Row("peak_lr", 9.3, f"{VISSL_10B}:81-83 (0.3 x 7936/256); {SEER_DOC}:128; {_V_LR}"),
            Row("start_lr", 0.15, f"{_V_START} (0.3 x one node's 128 / 256)"),
            Row("final_lr", 0.0093, f"{VISSL_SWAV}:108-110 (inherited); {_V_END}"),
            Row(
                "warmup_steps",
                5500,
                f"{VISSL_10B}:84 (0.043648 x 1B/7936 = 126,008 iterations); {_V_COMPOSITE}",
            ),
            Row("warmup_share", 0.043648, f"{VISSL_10B}:84"),
            Row(
                "schedule_shape",
                _V_SHAPE,
                f"{VISSL_10B}:84; {VISSL_SWAV}:103-112 (composite, interval_scaling [rescaled, fixed], "
                f"inherited); {_V_COMPOSITE}",
            ),
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
            Row("sync_bn", 8, f"{VISSL_10B}:56-58; {VISSL_SWAV}:62 (GROUP_SIZE 8, inherited); {_V_SYNC_BN}"),
            Row("activation_checkpointing", True, f"{VISSL_10B}:38,62-63"),
            Row(
                "checkpoint_granularity",
                "s1 1-2; s2 1-7; s3 1-9, 10-17; s4 none",
                f"{VISSL_10B}:38,62-63 (stage_checkpoints [[2], [7], [9, 17], []]); {VISSL} "
                "vissl/models/trunks/regnet_fsdp.py:332-359 (create_regnet_feature_blocks: the group ends per "
                "stage, [] one group without checkpointing), :241-259 (create_any_stage: a checkpoint_wrapper per "
                "group)",
            ),
            Row("sharding", "FSDP", f"{VISSL_10B}:4,31,47-52"),
            Row("image_order", _V_ORDER, _V_SAMPLER, _SHARDS_WHY),
            Row(
                "precision",
                "fp16 (FSDP compute dtype, torch AMP)",
                f"{VISSL_10B}:50-52,59-61; {_V_AUTOCAST}",
                _BF16_WHY,
            ),
            Row(
                "scores_dtype",
                "float16",
                f"{VISSL} vissl/models/heads/swav_prototypes_head.py:131-173 (SwavPrototypesHeadFSDP: only the "
                "prototype weights in a float32 FSDP unit), :110-128 (their product an nn.Linear); "
                f"{_V_AUTOCAST}, which computes nn.Linear in float16",
                _SCORES_WHY,
            ),
            Row("last_bn_init", 1.0, _V_FSDP_INIT),
            Row("conv_init", "N(0, 2/fan_out), fan_out = k*k*out", _V_FSDP_INIT, _CONV_WHY),
            Row("color", "jitter (0.8, 0.8, 0.8, 0.2) p 0.8, grey p 0.2", f"{VISSL_10B}:16-17; {_V_COLOR}"),
            Row("blur", "p 0.5, sigma 0.1-2", f"{VISSL_10B}:18-21; {_V_BLUR}"),
            Row("blur_extent", _PIL_EXTENT, f"{VISSL_10B}:18-21; {_V_BLUR}", _BLUR_WHY),
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
