"""The fine-tuning recipe: its settings and the pure arithmetic of a run (batch, steps, step decay).

SEER's ImageNet recipe (Goyal et al. 2021, Sec. 4.1) scaled to the data: SGD with momentum 0.9, weight decay
1e-4, learning rate 0.0125 for a batch of 256 (scaled linearly with the batch used), multiplied by 0.1 after 30
of 35 epochs (a fraction of the run here), RandomResizedCrop + horizontal flip. The loop that follows it is
``openseer.eval.finetune``; low-shot runs it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from openseer.config import ConfigError
from openseer.data.folders import DataError


@dataclass
class RecipeConfig:
    steps: int = 1500
    """Optimisation steps, whatever the size of the labelled set: a budget in epochs gives a 1% subset a few
    dozen steps, far from convergence. From scratch on 1% and 10% of the built-in slice, test top-1 has
    stopped rising or nearly so by 1,500 steps (docs/benchmarks.md#the-supervised-baselines-recipe)."""
    epochs: float | None = None
    """Alternative to `steps`: passes over the labelled set (SEER fine-tunes ImageNet for 35); when set, the
    number of steps follows the size of the set and `steps` is ignored."""
    batch_size: int = 256
    """Capped at the size of the set trained on."""
    lr: float = 0.0125
    """For a batch of 256; scaled linearly with the batch actually used. The centre of the grid below."""
    lr_factors: list[float] = field(default_factory=lambda: [0.3, 1.0, 3.0])
    """Learning rates tried: `lr` times each factor, each run trained on the labelled set minus `val_fraction`
    of each class and scored on that part; [1.0] trains at `lr` with no selection."""
    val_fraction: float = 0.2
    """Share of each class carved from the labelled set to choose the learning rate."""
    refit: bool = True
    """After the choice, train again at the chosen rate on the whole labelled set (the validation images are
    labels too, and scarce); false keeps the best validation run as it is (one run fewer)."""
    log_points: int = 50
    """Evenly spaced steps at which the training curve is logged (mean loss since the last point, and the
    validation top-1 when a validation split is scored)."""
    milestones: list[float] = field(default_factory=lambda: [30 / 35])
    """Where the learning rate is multiplied by `gamma`, as fractions of all steps (SEER: after epoch 30 of 35)."""
    gamma: float = 0.1
    """Factor applied to the learning rate at each milestone."""
    weight_decay: float = 1e-4
    """L2 weight decay."""
    momentum: float = 0.9
    """SGD momentum."""
    crop_scale: tuple[float, float] = (0.08, 1.0)
    """[min, max] area of the random resized crop, as a fraction of the image."""
    flip_p: float = 0.5
    """Probability of a horizontal flip."""

    def validate(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"recipe.steps: got {self.steps}, expected >= 1")
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"recipe.epochs: got {self.epochs}, expected > 0 (or null to use recipe.steps)")
        if self.batch_size < 2:
            raise ConfigError(f"recipe.batch_size: got {self.batch_size}, expected >= 2")
        if self.lr <= 0:
            raise ConfigError(f"recipe.lr: got {self.lr}, expected > 0")
        if not self.lr_factors or any(f <= 0 for f in self.lr_factors):
            raise ConfigError(f"recipe.lr_factors: got {self.lr_factors}, expected positive factors")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"recipe.val_fraction: got {self.val_fraction}, expected a fraction in (0, 1)")
        if self.log_points < 1:
            raise ConfigError(f"recipe.log_points: got {self.log_points}, expected >= 1")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ConfigError(f"recipe.milestones: got {self.milestones}, expected fractions in (0, 1)")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError(f"recipe.crop_scale: got {self.crop_scale}, expected 0 < min <= max <= 1")

    def lrs(self) -> list[float]:
        """The learning rates of the grid (per 256 images), smallest first, without duplicates."""
        return sorted(
            {float(f"{self.lr * f:.6g}") for f in self.lr_factors}
        )  # 0.1 * 3 -> 0.3, not 0.30000000000000004


def step_lr(base: float, step: int, milestones: list[int], gamma: float) -> float:
    """Step decay: ``base * gamma ** (number of milestones already reached)``."""
    return base * gamma ** sum(step >= m for m in milestones)


def plan(n: int, recipe: RecipeConfig) -> tuple[int, int, int]:
    """(batch size, steps per epoch, total steps) for n training images.

    The total is ``recipe.steps`` whatever n (a small set is simply seen more often), or ``recipe.epochs``
    passes when set. A last batch of one image is dropped: BatchNorm cannot train on it.
    """
    if n < 2:
        raise DataError(f"fine-tuning needs at least 2 labelled images, got {n}")
    bs = min(recipe.batch_size, n)
    steps_per_epoch = n // bs + (1 if n % bs > 1 else 0)
    if recipe.epochs is None:
        return bs, steps_per_epoch, recipe.steps
    return bs, steps_per_epoch, max(1, round(recipe.epochs * steps_per_epoch))
