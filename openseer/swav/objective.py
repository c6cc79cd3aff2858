"""The SwAV loss of a training step: codes for the assignment crops, then the swapped prediction (Caron et al.
2020, Sec. 3.1 and 4.3; swav main_swav.py's train()), configured once and called with each batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from openseer import distributed
from openseer.swav.loss import swav_loss
from openseer.swav.queue import EmbeddingQueue
from openseer.swav.sinkhorn import sinkhorn


@dataclass(eq=False)
class SwAVLoss:
    """``loss, codes = SwAVLoss(...)(z, scores)`` for one multi-crop batch.

    ``n_crops`` crops per image, codes computed for ``crops_for_assign`` and predicted from every other crop
    with the softmax ``temperature``; Sinkhorn-Knopp with ``epsilon`` and ``sinkhorn_iters`` over the global
    batch (:func:`~openseer.swav.sinkhorn.sinkhorn`). With a ``queue`` (of length > 0), the batch's embeddings
    enter it, and once it is full its embeddings, scored against the current ``prototypes``, are stacked in
    front of the batch for the codes (only the batch's rows are kept).
    """

    n_crops: int
    crops_for_assign: Sequence[int]
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iters: int = 3
    queue: EmbeddingQueue | None = None
    prototypes: nn.Module | None = None
    """The head's prototype layer (``SwAVHead.prototypes``): needed with a queue only."""

    def __post_init__(self) -> None:
        if self.queue is not None and self.queue.length == 0:
            self.queue = None  # a queue of no rows is no queue
        if self.queue is not None and self.prototypes is None:
            raise ValueError("SwAVLoss with a queue needs the prototypes to score it")

    def __call__(
        self, z: torch.Tensor, scores: torch.Tensor, temperature: float | None = None, with_queue: bool = True
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """z (n_crops*B, D) embeddings and scores (n_crops*B, K), crop-major, as
        :class:`~openseer.models.SwAVHead` returns them. Returns the loss (a float32 scalar) and the codes of each
        assignment crop (B, K) float32.

        ``temperature``: this step's (a schedule's); None: the configured one. ``with_queue``: whether the queue
        takes part in this step (the loop starts it at ``swav.queue_start_epoch``).

        The queue is stacked in once every process's queue is full, decided alike on all of them: their queues
        can fill at different steps (a batch cut short by unreadable files), and under FSDP scoring the queue
        gathers the prototypes, a collective that one process alone would wait in for ever.
        """
        queue = self.queue if with_queue else None
        stack = queue is not None and not distributed.any_process(not queue.full, z.device)
        batch = scores.shape[0] // self.n_crops
        codes = []
        with torch.no_grad():
            for i, crop_id in enumerate(self.crops_for_assign):
                out = scores[batch * crop_id : batch * (crop_id + 1)].detach()
                if stack:
                    out = torch.cat([self.prototypes(queue.embeddings[i]), out])
                codes.append(sinkhorn(out, self.epsilon, self.sinkhorn_iters)[-batch:])
                if queue is not None:
                    queue.push(i, z[batch * crop_id : batch * (crop_id + 1)])
        tau = self.temperature if temperature is None else temperature
        return swav_loss(scores, codes, self.n_crops, self.crops_for_assign, tau), codes
