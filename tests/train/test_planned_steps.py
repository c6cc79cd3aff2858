"""The step counts a run is planned in: whole global batches per epoch, epochs of them (at least one step)."""

from __future__ import annotations

import pytest

from openseer.data.folders import DataError
from openseer.train.config import OptimConfig
from openseer.train.data import full_global_batches


@pytest.mark.parametrize(
    ("epochs", "steps_per_epoch", "steps"),
    [(400.0, 5004, 2_001_600), (2.0, 3, 6), (0.5, 7, 4), (0.001, 10, 1)],
)
def test_planned_steps_is_epochs_of_steps_and_at_least_one(epochs, steps_per_epoch, steps) -> None:
    assert OptimConfig(epochs=epochs).planned_steps(steps_per_epoch) == steps


@pytest.mark.parametrize(
    ("images", "batch", "world", "steps"), [(50_000, 256, 1, 195), (50_000, 256, 4, 48), (512, 256, 2, 1)]
)
def test_an_epoch_is_whole_global_batches(images, batch, world, steps) -> None:
    assert full_global_batches(images, batch, world) == steps


def test_too_few_images_for_one_global_batch_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="511 images cannot fill one global batch of 512"):
        full_global_batches(511, 256, 2)
