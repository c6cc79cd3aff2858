"""Activation checkpointing per stage: same gradients as without, BatchNorm statistics updated once, not twice."""

from __future__ import annotations

import copy

import torch

from openseer.models import SwAVHead, SwAVModel, build_backbone, feature_dim
from openseer.train.parallel import checkpoint_stages


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
