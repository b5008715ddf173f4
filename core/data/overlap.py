"""Train/test overlap: which evaluation items also appear in the training data.

Items match on their whitespace-normalised, lower-cased instruction (plus input, when there is
one): the key that finds the v1 paper's held-out split and the AddSub/MultiArith/SingleEq test
items inside ``math_10k.json`` (LLM-Adapters issue #43). A run checks its own data with
:func:`check_overlap`; ``data.overlap`` says whether an overlap warns, fails or is ignored.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lladapt.common.errors import DataError
from lladapt.components.interfaces import Example
from lladapt.data.loading import load_run_data, normalize_text

if TYPE_CHECKING:  # pragma: no cover
    from lladapt.config import RunConfig
    from lladapt.data.loading import RunData

__all__ = ["DataOverlapWarning", "OverlapReport", "check_overlap", "example_key", "find_overlap"]


class DataOverlapWarning(UserWarning):
    """Evaluation items were found in the training data."""


def example_key(example: Example) -> str:
    """What two examples must share to count as the same item."""
    key = normalize_text(example.instruction)
    return f"{key}\n{normalize_text(example.input)}" if example.input.strip() else key


@dataclass
class OverlapReport:
    """How many evaluation items the training data contains, and which."""

    train: str
    eval: str
    train_records: int
    eval_records: int
    #: the evaluation examples seen in training, in evaluation order.
    seen: list[Example] = field(default_factory=list)

    @property
    def seen_count(self) -> int:
        return len(self.seen)

    @property
    def unseen_count(self) -> int:
        return self.eval_records - len(self.seen)

    def summary(self) -> str:
        return (
            f"{self.seen_count} of {self.eval_records} {self.eval} items are in the training data "
            f"{self.train} ({self.train_records} records)"
        )

    def to_dict(self, items: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "train": self.train,
            "eval": self.eval,
            "train_records": self.train_records,
            "eval_records": self.eval_records,
            "seen": self.seen_count,
            "unseen": self.unseen_count,
        }
        if items:
            out["seen_items"] = [{"source": ex.source, "instruction": ex.instruction} for ex in self.seen]
        return out


def find_overlap(
    train: Sequence[Example], evaluation: Sequence[Example], *, train_name: str = "train",
    eval_name: str = "eval",
) -> OverlapReport:
    """The evaluation examples whose key (:func:`example_key`) occurs in ``train``."""
    keys = {example_key(ex) for ex in train}
    seen = [ex for ex in evaluation if example_key(ex) in keys]
    return OverlapReport(train_name, eval_name, len(train), len(evaluation), seen)


def check_overlap(config: RunConfig, data: RunData | None = None) -> list[OverlapReport]:
    """Compare every training set of a run with every evaluation set and act on
    ``data.overlap``: ``warn`` (a :class:`DataOverlapWarning`), ``error`` (a :class:`DataError`)
    or ``ignore`` (nothing is loaded). Returns the reports that found an overlap.

    ``data`` is the run's data when a caller has loaded it already (a run loads its data once);
    by default it is loaded from the config (:func:`lladapt.data.loading.load_run_data`)."""
    action = config.data.overlap
    if action == "ignore" or not config.data.train or not config.eval.datasets:
        return []
    if data is None:
        data = load_run_data(config)
    found = []
    for evaluated in data.eval:
        for trained in data.train:
            report = find_overlap(
                trained.examples, evaluated.examples, train_name=trained.label,
                eval_name=evaluated.label,
            )
            if report.seen:
                found.append(report)
    if found:
        lines = "\n".join(f"  {r.summary()}" for r in found)
        if action == "error":
            raise DataError(
                f"the training data contains evaluation items:\n{lines}\n"
                "Set data.overlap=warn to run anyway (the scores will be inflated)."
            )
        warnings.warn(
            f"the training data contains evaluation items:\n{lines}", DataOverlapWarning, stacklevel=2
        )
    return found
