"""One SwAV objective evaluation: codes for the assignment crops, then the swapped prediction loss.

Shared by the pretraining loop and the benchmarks that time or count its step, so they measure the same maths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from openseer.swav.loss import swav_loss
from openseer.swav.queue import EmbeddingQueue
from openseer.swav.sinkhorn import sinkhorn


def swav_objective(
    z: torch.Tensor,
    scores: torch.Tensor,
    prototypes: nn.Linear,
    n_crops: int,
    crops_for_assign: Sequence[int],
    temperature: float,
    epsilon: float,
    sinkhorn_iters: int,
    queue: EmbeddingQueue | None = None,
    stack_queue: bool | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Loss and codes for one multi-crop batch.

    z (n_crops*B, D) embeddings and scores (n_crops*B, K), crop-major, as :class:`~openseer.models.SwAVHead`
    returns them. For each assignment crop, Sinkhorn-Knopp codes over the global batch, with the scores of the
    queue's embeddings against the current prototypes stacked in front once the queue is full (only the
    batch's rows are kept); the batch's embeddings then enter the queue. Returns (loss, codes per assignment
    crop (B, K)).

    ``stack_queue``: whether the queue's scores are stacked in; None: when this process's queue is full. With
    several processes the caller decides once for all of them (:func:`openseer.train.pretrain.objective` waits
    until every queue is full), because scoring the queue under FSDP gathers the prototypes, a collective.
    """
    if stack_queue is None:
        stack_queue = queue is not None and queue.full
    if stack_queue and (queue is None or not queue.full):
        raise ValueError("stack_queue=True needs a full queue")
    batch = scores.shape[0] // n_crops
    codes = []
    with torch.no_grad():
        for i, crop_id in enumerate(crops_for_assign):
            out = scores[batch * crop_id : batch * (crop_id + 1)].detach()
            if stack_queue:
                out = torch.cat([prototypes(queue.embeddings[i]), out])
            codes.append(sinkhorn(out, epsilon, sinkhorn_iters)[-batch:])
            if queue is not None:
                queue.push(i, z[batch * crop_id : batch * (crop_id + 1)])
    return swav_loss(scores, codes, n_crops, crops_for_assign, temperature), codes
