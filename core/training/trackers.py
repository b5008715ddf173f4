"""Experiment trackers (``train.report_to``): TensorBoard, Weights & Biases, MLflow, ... through
accelerate's trackers (``Accelerator(log_with=...)``, ``init_trackers``, ``log``,
``end_training``), as transformers' ``report_to`` does. None by default.

Each logging step's record (loss, learning rate, gradient norm, tokens/s, padded share and, on
validation steps, the validation loss) is logged at its optimizer step; the run's config is stored
as the run's hyperparameters. Local trackers (TensorBoard) write under ``<output_dir>/trackers``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lladapt.config.trackers import PROJECT


def accelerator_kwargs(names: Sequence[str], logging_dir: Path | None) -> dict[str, Any]:
    """Keyword arguments for ``Accelerator`` that enable the trackers ``names``."""
    if not names:
        return {}
    return {"log_with": list(names), "project_dir": str(logging_dir or Path("trackers"))}


def hyperparameters(config: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config flattened to ``section.key`` -> a bool, number or string (what
    TensorBoard's hyperparameters accept; lists and None are written as text)."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(hyperparameters(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


class Tracking:
    """Context manager around a run: starts the accelerator's trackers, logs records, ends them
    (also when the run stops with an error, so what was logged is flushed)."""

    def __init__(self, accelerator: Any, names: Sequence[str], config: Mapping[str, Any] | None) -> None:
        self.accelerator, self.names, self.config = accelerator, list(names), config or {}

    def __enter__(self) -> Tracking:
        if self.names:
            self.accelerator.init_trackers(PROJECT, config=hyperparameters(self.config))
        return self

    def log(self, record: Mapping[str, Any]) -> None:
        """Log a progress record's numbers (not its ``step``: that is the x axis)."""
        if self.names and record:
            values = {k: v for k, v in record.items() if k != "step" and isinstance(v, int | float)}
            self.accelerator.log(values, step=record["step"])

    def __exit__(self, *exc: object) -> None:
        if self.names:
            self.accelerator.end_training()
