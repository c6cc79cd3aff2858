"""Queue rows per process as swav main_swav.py sizes them: the configured length rounded down to a multiple of
the global batch, then split over the processes (main_swav.py:213 and :229)."""

from __future__ import annotations

import pytest

from openseer.train.config import SwAVConfig


@pytest.mark.parametrize(
    ("queue", "batch", "world", "rows"),
    [
        (3840, 64, 4, 960),  # swav_400ep_bs256_pretrain.sh: 4 GPUs x 64, 15 of its own batches per process
        (3840, 64, 64, 0),  # the same queue at 64 GPUs x 64 is shorter than one global batch: no queue
        (3840, 64, 8, 448),  # 3840 rounded down to 7 x 512, then split over 8 processes
        (2560, 40, 64, 40),  # swav_RN50w4_400ep_pretrain.sh: one global batch, one own batch per process
        (0, 16, 512, 0),
        (100, 10, 1, 100),
    ],
)
def test_local_queue_length_follows_main_swav(queue: int, batch: int, world: int, rows: int) -> None:
    local = SwAVConfig(queue_length=queue).local_queue_length(batch, world)
    assert local == rows
    assert local % batch == 0  # a whole number of this process's batches


def test_local_queue_length_rejects_an_empty_batch() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        SwAVConfig().local_queue_length(0, 4)
