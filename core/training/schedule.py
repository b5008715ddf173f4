"""Learning-rate schedules, the same formulas as transformers' ``get_scheduler`` (linear, cosine,
constant, constant_with_warmup), as a torch ``LambdaLR``.

Written out rather than imported: ``transformers.optimization`` imports the Trainer's utilities
and with them peft, 8 to 12 seconds of start-up on a small CPU for a few lines of arithmetic.
``tests/test_training.py`` checks every schedule against transformers' own, step by step."""

from __future__ import annotations

import math
from typing import Any


def lr_factor(name: str, step: int, warmup: int, total: int) -> float:
    """The multiplier of the base learning rate at ``step`` (0-based, as ``LambdaLR`` counts)."""
    if name == "constant":
        return 1.0
    if step < warmup:
        return step / max(1, warmup)
    if name == "constant_with_warmup":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if name == "linear":
        return max(0.0, 1.0 - progress)
    if name == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    raise ValueError(f"unknown lr_scheduler {name!r}")


class _Factor:
    """The factor as an object: LambdaLR saves its three fields in the scheduler state."""

    def __init__(self, name: str, warmup: int, total: int) -> None:
        self.name, self.warmup, self.total = name, warmup, total

    def __call__(self, step: int) -> float:
        return lr_factor(self.name, step, self.warmup, self.total)


def make_scheduler(name: str, optimizer: Any, *, warmup_steps: int, total_steps: int) -> Any:
    """``constant`` ignores ``warmup_steps``; the others warm up linearly from 0."""
    from torch.optim.lr_scheduler import LambdaLR

    warmup = 0 if name == "constant" else min(warmup_steps, total_steps)
    return LambdaLR(optimizer, _Factor(name, warmup, total_steps))
