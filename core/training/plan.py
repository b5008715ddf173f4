"""The plan of a run: which micro-batches make up each optimizer step, and the stream of
micro-batches it draws them from.

Each optimizer step takes the next ``batch_size / micro_batch_size`` micro-batches from a stream
that runs through the epochs in a seeded order (:mod:`.sampler`); ``epochs: 3`` is exactly three
passes, the last step shorter when the micro-batches do not divide evenly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lladapt.config import TrainSection
from lladapt.training.sampler import epoch_batches


@dataclass(frozen=True)
class Plan:
    """Which micro-batches make up each optimizer step."""

    n_examples: int
    micro_batch_size: int
    #: micro-batches per optimizer step, over all processes
    per_step: int
    #: micro-batches in one epoch
    per_epoch: int
    #: micro-batches in the whole run
    total: int

    @property
    def steps(self) -> int:
        return math.ceil(self.total / self.per_step)

    def micro_batches(self, step: int) -> range:
        """Global indices of the micro-batches of ``step`` (1-based)."""
        return range((step - 1) * self.per_step, min(step * self.per_step, self.total))

    def record(self, world: int) -> dict[str, int]:
        """The plan as a checkpoint stores it: a resume must find the same one, or the data
        position it stored would point at other micro-batches."""
        return {"steps": self.steps, "total_micro_batches": self.total, "examples": self.n_examples,
                "per_step": self.per_step, "world_size": world}


def make_plan(n_examples: int, settings: TrainSection) -> Plan:
    per_step = settings.batch_size // settings.micro_batch_size
    per_epoch = math.ceil(n_examples / settings.micro_batch_size)
    total = settings.max_steps * per_step if settings.max_steps else math.ceil(settings.epochs * per_epoch)
    return Plan(n_examples, settings.micro_batch_size, per_step, per_epoch, max(1, total))


def total_steps(n_examples: int, settings: TrainSection) -> int:
    return make_plan(n_examples, settings).steps


class Batches:
    """The micro-batch stream: global index -> example indices (each epoch's order cached)."""

    def __init__(self, lengths: Sequence[int], plan: Plan, settings: TrainSection) -> None:
        self.lengths, self.plan, self.settings = lengths, plan, settings
        self.orders: dict[int, list[list[int]]] = {}

    def order(self, epoch: int) -> list[list[int]]:
        if epoch not in self.orders:
            self.orders = {epoch: epoch_batches(
                self.lengths, self.plan.micro_batch_size, seed=self.settings.seed, epoch=epoch,
                group_by_length=self.settings.group_by_length,
            )}
        return self.orders[epoch]

    def __getitem__(self, index: int) -> list[int]:
        return self.order(index // self.plan.per_epoch)[index % self.plan.per_epoch]
