"""Progressive resolution: the side schedule (start, growth, rounding, off) and the resize of crop batches."""

from __future__ import annotations

import pytest
import torch

from openseer.data.progressive import progressive_side, resize_crops


def test_side_starts_small_grows_and_ends_full() -> None:
    sides = [progressive_side(224, s / 100, start_scale=0.5, until=0.5, multiple=32) for s in range(101)]
    assert sides[0] == 128  # half of 224 is 112, 3.5 multiples of 32: rounded to 4
    assert sides == sorted(sides)  # never shrinks
    assert all(s % 32 == 0 or s == 224 for s in sides)
    assert sides[50:] == [224] * 51  # full size from `until` on
    assert set(sides) == {128, 160, 192, 224}  # few shapes


@pytest.mark.parametrize(
    ("full", "share", "start", "until", "multiple", "side"),
    [
        (32, 0.0, 0.5, 0.5, 8, 16),
        (32, 0.25, 0.5, 0.5, 8, 24),
        (32, 0.5, 0.5, 0.5, 8, 32),
        (32, 0.9, 0.5, 0.5, 8, 32),
        (32, 0.0, 1.0, 0.5, 8, 32),  # off
        (32, 0.0, 0.1, 0.5, 8, 8),  # never below one multiple
        (8, 0.0, 0.5, 0.5, 8, 8),  # a crop of one multiple or less keeps its size
        (96, 0.0, 0.75, 1.0, 8, 72),
    ],
)
def test_side_table(full, share, start, until, multiple, side) -> None:
    assert progressive_side(full, share, start, until, multiple) == side


def test_resize_keeps_batches_at_their_side_and_the_memory_format() -> None:
    x = torch.rand(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    small = torch.rand(4, 3, 16, 16)
    out = resize_crops([x, small], [16, 16])
    assert out[0].shape == (4, 3, 16, 16) and out[0].is_contiguous(memory_format=torch.channels_last)
    assert out[1] is small  # already at its side: untouched
    # antialiased: a constant image stays constant, and the mean of a random one is kept
    torch.testing.assert_close(
        resize_crops([torch.full((1, 3, 32, 32), 0.3)], [8])[0], torch.full((1, 3, 8, 8), 0.3)
    )
    torch.testing.assert_close(out[0].mean(), x.mean(), atol=0.01, rtol=0)
