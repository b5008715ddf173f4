"""A run's output folder: the files a run writes there, and the checks made before anything is
written (another run's files, a resume that changes the recipe, a training that already
finished)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lladapt.common.errors import LladaptError
from lladapt.common.fileio import write_json_atomic
from lladapt.config import RunConfig

#: files a run writes into its output folder.
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
ADAPTER_DIR = "adapter"
#: the training summary, written once the final adapter is saved: a resumed run that finds it
#: evaluates that adapter instead of training again.
TRAINED_FILE = "trained.json"


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse to mix two runs' files: an output folder holding another run needs ``overwrite``."""
    if path.exists() and not path.is_dir():
        raise LladaptError(f"output_dir '{path}' exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise LladaptError(
            f"output_dir '{path}' already holds files (another run's?); choose another "
            "output_dir or pass --overwrite"
        )


def check_resume(path: Path, config: RunConfig) -> None:
    """A resumed run continues the run in ``path``: same recipe, or a refusal naming the keys."""
    from lladapt.training.checkpoints import recipe_differences

    saved = path / CONFIG_FILE
    if not saved.is_file():
        raise LladaptError(f"cannot resume: {saved} does not exist (no run was started in output_dir '{path}')")
    differences = recipe_differences(json.loads(saved.read_text(encoding="utf-8")), config.model_dump(mode="json"))
    if differences:
        raise LladaptError(
            f"cannot resume the run in '{path}': the config changes its recipe:\n  "
            + "\n  ".join(differences)
            + "\nstart a new run (another output_dir) instead"
        )


def trained_summary(out: Path) -> dict[str, Any] | None:
    """``{"train": ..., "eval_before": ...}`` of a run whose training finished (its final adapter
    is saved), else None."""
    path = out / TRAINED_FILE
    if not (path.is_file() and (out / ADAPTER_DIR).is_dir()):
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LladaptError(f"{path}: not valid JSON ({exc.msg}); remove it to train again") from None


def write_json(path: Path, data: Any) -> None:
    write_json_atomic(path, data, default=str)
