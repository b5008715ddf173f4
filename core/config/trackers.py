"""The experiment trackers ``train.report_to`` may name, and the check that each one's package is
installed (made when the config is validated; :mod:`lladapt.training.trackers` logs to them)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

__all__ = ["PROJECT", "TRACKERS", "check_available"]

#: tracker name -> (module that must be importable, pip package that provides it)
TRACKERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
    "comet_ml": ("comet_ml", "comet-ml"),
    "aim": ("aim", "aim"),
    "clearml": ("clearml", "clearml"),
    "dvclive": ("dvclive", "dvclive"),
    "swanlab": ("swanlab", "swanlab"),
    "trackio": ("trackio", "trackio"),
}
#: the project (run) name the trackers file the run under
PROJECT = "lladapt"


def check_available(names: Sequence[str]) -> list[str]:
    """``names`` when every tracker's package is installed; otherwise a ValueError saying what to
    install (accelerate itself would silently drop a tracker whose package is missing)."""
    missing = [name for name in names if importlib.util.find_spec(TRACKERS[name][0]) is None]
    if missing:
        packages = " ".join(TRACKERS[name][1] for name in missing)
        raise ValueError(
            f"{', '.join(repr(n) for n in missing)} needs the package(s) `{packages}`, which "
            f"is not installed: run `pip install {packages}` (or remove it from report_to)"
        )
    return list(names)
