"""SwAV's maths: Sinkhorn-Knopp codes, swapped prediction loss, embedding queue, cluster health."""

from openseer.swav.health import cluster_health
from openseer.swav.loss import swav_loss
from openseer.swav.objective import SwAVLoss
from openseer.swav.queue import EmbeddingQueue
from openseer.swav.sinkhorn import sinkhorn

__all__ = ["EmbeddingQueue", "SwAVLoss", "cluster_health", "sinkhorn", "swav_loss"]
