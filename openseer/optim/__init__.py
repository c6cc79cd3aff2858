"""Optimisers and schedules."""

from openseer.optim.lars import LARS, param_groups
from openseer.optim.schedules import cosine_schedule, warmup_length

__all__ = ["LARS", "cosine_schedule", "param_groups", "warmup_length"]
