"""The fine-tuning recipe: SEER's settings, step decay, and the batch and step plan for a set of any size."""

from __future__ import annotations

import pytest

from openseer.config import ConfigError, from_dict
from openseer.eval.recipe import RecipeConfig, plan, step_lr


def test_step_decay_at_milestones() -> None:
    assert [step_lr(1.0, s, [3, 5], 0.1) for s in range(6)] == pytest.approx([1, 1, 1, 0.1, 0.1, 0.01])


def test_seer_recipe_defaults_and_plan() -> None:
    r = RecipeConfig()
    assert (r.lr, r.momentum, r.weight_decay, r.epochs) == (0.0125, 0.9, 1e-4, None)
    assert r.milestones == pytest.approx([30 / 35])
    # a budget of steps, whatever the size of the set
    assert plan(1000, r) == (256, 4, r.steps) and plan(20, r) == (20, 1, r.steps)
    # epochs, the alternative: 3 full batches and one of 232
    assert plan(1000, RecipeConfig(epochs=35)) == (256, 4, 140)
    assert plan(257, RecipeConfig(epochs=35)) == (
        256,
        1,
        35,
    )  # a last batch of one image is dropped (BatchNorm)
    assert plan(10, RecipeConfig(epochs=2)) == (10, 1, 2)  # the batch is capped at the set
    assert RecipeConfig(lr=0.1).lrs() == [0.03, 0.1, 0.3]  # the grid, without float noise
    for bad in ({"steps": 0}, {"epochs": 0}, {"lr_factors": []}, {"val_fraction": 1.0}, {"log_points": 0}):
        with pytest.raises(ConfigError, match="recipe." + next(iter(bad))):
            from_dict(RecipeConfig, bad)
