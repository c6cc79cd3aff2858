"""Activation checkpointing per stage or per block range (VISSL's stage_checkpoints): same loss and gradients as
without, BatchNorm statistics updated once, not twice, and the ranges recomputed where the config puts them."""

from __future__ import annotations

import copy

import pytest
import torch

from openseer.config import ConfigError, load_config
from openseer.models import SwAVHead, SwAVModel, build_backbone, feature_dim
from openseer.train.config import ParallelConfig, PretrainConfig
from openseer.train.parallel import (
    backbone_stages,
    checkpoint_segments,
    checkpoint_stages,
    parallelize,
    stage_depths,
)


def test_checkpointed_stages_give_the_same_gradients_and_statistics() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("regnety_200mf", stem="small")
    plain = SwAVModel(backbone, SwAVHead(feature_dim(backbone), [32], 16, 10, use_bn=True)).train()
    recomputed = copy.deepcopy(plain)
    checkpoint_stages(recomputed.backbone)
    crops = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 8, 8)]
    for model in (plain, recomputed):
        _, scores = model(crops)
        scores.square().mean().backward()
    grads = dict(plain.named_parameters())
    for name, p in recomputed.named_parameters():
        name = name.replace("_checkpoint_wrapped_module.", "")
        torch.testing.assert_close(p.grad, grads[name].grad, atol=1e-6, rtol=1e-5, msg=name)
    torch.testing.assert_close(recomputed.state_dict(), plain.state_dict(), atol=1e-6, rtol=1e-5)
    norms = [m for m in recomputed.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # one update per forward pass (2 crop sizes), none from the recomputation
    assert all(int(m.num_batches_tracked) == 2 for m in norms)
    assert all(m.momentum == 0.1 for m in norms)  # restored after the recomputation


# ---- block ranges per stage, as VISSL configures them (TRUNK.REGNET.stage_checkpoints) ----

SEER_10B_DEPTHS = (2, 7, 17, 1)


def test_segments_read_vissls_stage_checkpoints() -> None:
    # regnet10B.yaml: stage 3 in two groups, stage 4 not checkpointed
    assert checkpoint_segments(SEER_10B_DEPTHS, [[2], [7], [9, 17], []]) == [
        [(0, 2)],
        [(0, 7)],
        [(0, 9), (9, 17)],
        [],
    ]
    # null: each stage whole (the default of every other preset)
    assert checkpoint_segments(SEER_10B_DEPTHS, None) == [[(0, 2)], [(0, 7)], [(0, 17)], [(0, 1)]]
    # the last group runs to the stage's end; stages past the list are not checkpointed
    assert checkpoint_segments((3, 4, 5, 6), [[1], [2, 3]]) == [
        [(0, 1), (1, 3)],
        [(0, 2), (2, 3), (3, 4)],
        [],
        [],
    ]


@pytest.mark.parametrize(
    ("ranges", "message"),
    [([[3], [], [], []], "stage 1 has 2 blocks"), ([[2], [7], [9, 17], [], [1]], "5 stages given")],
)
def test_ranges_that_do_not_fit_the_trunk_are_refused(ranges: list[list[int]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        checkpoint_segments(SEER_10B_DEPTHS, ranges)


def test_the_config_refuses_ranges_that_do_not_increase() -> None:
    with pytest.raises(ConfigError, match="parallel.stage_checkpoints"):
        load_config(PretrainConfig, [], ["parallel.stage_checkpoints=[[2], [9, 9]]"])
    with pytest.raises(ConfigError, match="parallel.stage_checkpoints"):
        load_config(PretrainConfig, [], ["parallel.stage_checkpoints=[[0]]"])


def _recorded_blocks(backbone: torch.nn.Module) -> list[str]:
    """Names of the trunk's blocks in the order their forward passes start (recomputations included: a
    recomputation may stop inside its last block once it has every tensor it needs, so hooks on entry)."""
    calls: list[str] = []
    for stage_name, stage in backbone_stages(backbone):
        for block_name, block in getattr(stage, "_checkpoint_wrapped_module", stage).named_children():
            block.register_forward_pre_hook(lambda *_, n=f"{stage_name}.{block_name}": calls.append(n))
    return calls


def test_block_ranges_give_the_same_loss_and_gradients_and_recompute_as_configured() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("regnety_200mf", stem="small")
    assert stage_depths(backbone) == [1, 1, 4, 7]
    plain = SwAVModel(backbone, SwAVHead(feature_dim(backbone), [32], 16, 10, use_bn=True)).train()
    ranged = copy.deepcopy(plain)
    # stage 1 whole, stage 2 left alone, stage 3 in two groups, stage 4 in three
    ranges = [[1], [], [2], [3, 5]]
    parallelize(
        ranged, ParallelConfig(activation_checkpointing=True, stage_checkpoints=ranges), torch.device("cpu")
    )
    assert not hasattr(ranged.backbone.s2, "_checkpoint_wrapped_module")  # an empty list: no wrapper
    calls = _recorded_blocks(ranged.backbone)
    crops = [torch.randn(4, 3, 16, 16)]
    losses = []
    for model in (plain, ranged):
        _, scores = model(crops)
        loss = scores.square().mean()
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0])
    grads = dict(plain.named_parameters())
    for name, p in ranged.named_parameters():
        name = name.replace("_checkpoint_wrapped_module.", "")
        torch.testing.assert_close(p.grad, grads[name].grad, atol=1e-6, rtol=1e-5, msg=name)
    torch.testing.assert_close(ranged.state_dict(), plain.state_dict(), atol=1e-6, rtol=1e-5)
    forward = [f"s{i}.b{j}" for i, depth in enumerate((1, 1, 4, 7), start=1) for j in range(1, depth + 1)]
    assert calls[: len(forward)] == forward
    # the backward pass recomputes each range as a unit, last range first; s2 (unchecked) is never recomputed
    groups = [["s4.b6", "s4.b7"], ["s4.b4", "s4.b5"], ["s4.b1", "s4.b2", "s4.b3"], ["s3.b3", "s3.b4"]]
    groups += [["s3.b1", "s3.b2"], ["s1.b1"]]
    assert calls[len(forward) :] == [name for group in groups for name in group]
