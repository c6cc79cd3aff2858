"""What a run reports as it goes: JSON lines, TensorBoard, and collapse warnings with advice."""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricsWriter:
    """Appends one JSON object per logged step to ``metrics.jsonl`` and mirrors scalars to TensorBoard."""

    def __init__(self, out_dir: Path, tensorboard: bool = True) -> None:
        self.path = out_dir / "metrics.jsonl"
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 - kept open for the run
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
            except ImportError:  # tensorboard is a dependency, but a stripped install should still train
                log.warning("tensorboard is not installed; metrics go to %s only", self.path)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


COLLAPSE_ADVICE = (
    "Common fixes: lower optim.base_lr or raise optim.warmup_epochs; shorten "
    "swav.freeze_prototypes_iters; use fewer prototypes (model.prototypes) or a queue (swav.queue_length) when "
    "the batch is small; keep swav.epsilon at 0.05 or lower (a large epsilon gives flat codes); check that the "
    "augmentations are not so strong that views share nothing."
)


class CollapseMonitor:
    """Warns (once per kind) when SwAV stops learning, the most common failure in practice.

    * loss pinned near ln K: predictions are uniform over the prototypes, nothing is learned;
    * a handful of prototypes take nearly all codes: the equipartition is lost (features collapsed).
    Checks start after ``grace`` steps (warm-up and prototype freezing make early steps look like collapse).
    """

    def __init__(self, n_prototypes: int, grace: int, window: int = 50) -> None:
        self.ln_k = math.log(n_prototypes)
        self.grace, self.window = grace, window
        self.losses: deque[float] = deque(maxlen=window)
        self.entropies: deque[float] = deque(maxlen=window)
        self.warned: set[str] = set()

    def update(self, step: int, loss: float, usage_entropy: float) -> str | None:
        self.losses.append(loss)
        self.entropies.append(usage_entropy)
        if step < self.grace or len(self.losses) < self.window:
            return None
        mean_loss = sum(self.losses) / len(self.losses)
        mean_entropy = sum(self.entropies) / len(self.entropies)
        if mean_loss > 0.98 * self.ln_k and "flat" not in self.warned:
            self.warned.add("flat")
            return (
                f"possible collapse at step {step}: the loss ({mean_loss:.3f}) has stayed near ln K = "
                f"{self.ln_k:.3f}, i.e. the model predicts uniform assignments. {COLLAPSE_ADVICE}"
            )
        if mean_entropy < 0.2 and "few" not in self.warned:
            self.warned.add("few")
            return (
                f"possible collapse at step {step}: a handful of prototypes take nearly all codes (usage entropy "
                f"{mean_entropy:.2f} of 1). {COLLAPSE_ADVICE}"
            )
        return None


class ProgressBar:
    """The run's progress bar: over the time budget for a budgeted run (elapsed, remaining, images/s, loss), over
    the steps otherwise. Training time is what counts, as for the schedule: checkpoint I/O is not."""

    def __init__(self, total_steps: int, step: int, budget_s: float | None, seconds: float = 0.0) -> None:
        from tqdm.auto import tqdm

        self.budget_s = budget_s
        if budget_s is not None:  # one unit a second of training; tqdm shows elapsed<remaining from it
            fmt = "{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"
            self._bar = tqdm(total=budget_s, initial=seconds, unit="s", bar_format=fmt, dynamic_ncols=True)
        else:
            self._bar = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True)
        self._seconds = seconds

    def update(self, step: int, seconds: float, loss: float, imgs_per_s: float, lr: float) -> None:
        """After a step: ``seconds`` of training so far; the figures show up in the postfix."""
        if self.budget_s is not None:
            self._bar.update(min(seconds, self.budget_s) - self._seconds)
            self._seconds = min(seconds, self.budget_s)
        else:
            self._bar.update(1)
        self._bar.set_postfix(
            step=step, loss=f"{loss:.3f}", lr=f"{lr:.3g}", img_s=f"{imgs_per_s:.0f}", refresh=False
        )

    def close(self) -> None:
        self._bar.close()
