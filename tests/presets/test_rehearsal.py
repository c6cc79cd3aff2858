"""A rehearsal changes only sizes: every other row of the conformance table reads the same for the rehearsal (at
its own world size and data) as for the preset (at the reference run's), and each size keeps its ratio."""

from __future__ import annotations

import dataclasses

import pytest
from support.reference import QUANTITIES, REFERENCES, planned_steps, reference, same, stage_depths_of
from support.rehearsal import rehearsal_overrides, scaled_stage_checkpoints

from openseer.config import load_config
from openseer.train.config import PretrainConfig
from openseer.train.parallel import checkpoint_segments

STEPS, WORLD, N_TRAIN, BATCH = 300, 2, 60_000, 64

# rows a rehearsal may change, each a size, a share of a shorter run, or an exception its module documents
SIZES = {
    "crops",  # sides (counts and scales are other rows)
    "trunk",
    "conv_init",  # the trunk's own (swav-rn50's ResNet-50 becomes a RegNetY)
    "head",  # widths (depth is another row)
    "head_bn",  # SEER's head without BatchNorm collapses at this size (see tests/support/rehearsal.py)
    "prototypes",
    "queue",
    "freeze",
    "batch",
    "global_batch",
    "warmup_steps",  # its share is another row
    "warmup_share",  # rounded to whole steps of a shorter run: checked below to one step
    "epochs",
    "sync_bn",  # no CPU kernels in torch
    "checkpoint_granularity",  # block ranges moved to the small trunk's stages: checked below
    "last_bn_init",  # a small trunk on tiny crops collapses from VISSL's init (see tests/support/rehearsal.py)
    "blur",  # sigma is in pixels
    "blur_extent",
}


def _pair(preset: str, bf16: bool = True):  # noqa: ANN202 - (preset cfg, its reference, rehearsal cfg, its reference)
    ref = reference(preset)
    overrides = rehearsal_overrides(preset, STEPS, WORLD, N_TRAIN, batch_size=BATCH, bf16=bf16)
    small = load_config(
        PretrainConfig, [preset], [f"{k}={v!r}".replace("'", '"') for k, v in overrides.items()]
    )
    small_ref = dataclasses.replace(ref, world_size=WORLD, images_per_epoch=N_TRAIN)
    return load_config(PretrainConfig, [preset], []), ref, small, small_ref


@pytest.mark.parametrize("preset", [r.preset for r in REFERENCES])
def test_a_rehearsal_changes_only_sizes(preset: str) -> None:
    cfg, ref, small, small_ref = _pair(preset)
    changed = {
        key
        for key, q in QUANTITIES.items()
        if key not in SIZES and not same(q.of(small, small_ref), q.of(cfg, ref))
    }
    assert not changed, {
        key: (QUANTITIES[key].of(cfg, ref), QUANTITIES[key].of(small, small_ref)) for key in changed
    }


@pytest.mark.parametrize("preset", [r.preset for r in REFERENCES])
def test_each_size_keeps_its_ratio(preset: str) -> None:
    cfg, ref, small, small_ref = _pair(preset)
    planned = planned_steps(small, small_ref)
    assert planned == STEPS
    # the schedule's landmarks keep their share of the run, to one step of the shorter run
    share = QUANTITIES["warmup_share"]
    assert abs(share.of(small, small_ref) - share.of(cfg, ref)) <= 1 / STEPS
    assert (
        abs(
            small.swav.freeze_prototypes_iters / STEPS
            - cfg.swav.freeze_prototypes_iters / planned_steps(cfg, ref)
        )
        <= 1 / STEPS
    )
    # prototypes per image of the global batch, and the queue in global batches
    batch_ratio = (BATCH * WORLD) / (cfg.optim.batch_size * ref.world_size)
    assert small.model.prototypes == max(10, round(cfg.model.prototypes * batch_ratio))
    assert small.swav.queue_length == round(cfg.swav.queue_length * batch_ratio)
    # every crop side and the blur's sigma by one factor, the first crop at 32 px
    factor = 32 / cfg.crops[0].size
    assert [c.size for c in small.crops] == [max(8, round(c.size * factor)) for c in cfg.crops]
    assert small.augment.blur_sigma == pytest.approx([s * factor for s in cfg.augment.blur_sigma])
    assert len(small.model.head_hidden) == len(cfg.model.head_hidden)
    # activation checkpointing: each stage in as many ranges as the small trunk's stage has blocks for, and the
    # stages the preset leaves whole or unchecked stay so
    if cfg.parallel.activation_checkpointing:
        depths, small_depths = stage_depths_of(cfg.model.arch), stage_depths_of(small.model.arch)
        big = checkpoint_segments(depths, cfg.parallel.stage_checkpoints)
        few = checkpoint_segments(small_depths, small.parallel.stage_checkpoints)
        assert [min(len(b), d) for b, d in zip(big, small_depths, strict=True)] == [len(f) for f in few]


def test_bf16_is_kept_only_where_the_cpu_computes_it() -> None:
    assert _pair("seer-rg256gf", bf16=True)[2].run.precision == "bf16"
    assert _pair("seer-rg256gf", bf16=False)[2].run.precision == "fp32"


def test_a_rehearsal_of_no_steps_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        rehearsal_overrides("swav-rn50", 0, WORLD, N_TRAIN)


def test_seer_10bs_block_ranges_land_in_the_same_places_of_the_small_trunk() -> None:
    assert stage_depths_of("regnety_10b") == (2, 7, 17, 1) and stage_depths_of("regnety_200mf") == (
        1,
        1,
        4,
        7,
    )
    ranges = scaled_stage_checkpoints([[2], [7], [9, 17], []], (2, 7, 17, 1), (1, 1, 4, 7))
    assert ranges == [[1], [1], [2, 4], []]
    assert _pair("seer-10b")[2].parallel.stage_checkpoints == ranges
    assert _pair("seer-rg256gf")[2].parallel.stage_checkpoints is None  # each stage whole, as the preset
