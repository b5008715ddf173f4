"""A run's output folder: the files a run writes there, and the checks made before anything is
written (another run's files, a resume that changes the recipe, a training that already
finished)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lladapt.common.errors import FolderInUseError, LladaptError, WriteError
from lladapt.common.fileio import write_json_atomic
from lladapt.common.folder_lock import LOCK_FILE, locked_folder
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
    if path.is_dir() and any(p.name != LOCK_FILE for p in path.iterdir()) and not overwrite:
        raise LladaptError(
            f"output_dir '{path}' already holds files (another run's?); choose another "
            "output_dir or pass --overwrite"
        )


def check_resume(path: Path, config: RunConfig) -> None:
    """A resumed run continues the run in ``path``: same recipe, or a refusal naming the keys."""
    from lladapt.training.checkpoints import recipe_differences
    from lladapt.training.progress import read_metrics

    saved = path / CONFIG_FILE
    if not saved.is_file():
        raise LladaptError(f"cannot resume: {saved} does not exist (no run was started in output_dir '{path}')")
    try:
        recorded = json.loads(saved.read_bytes())
    except ValueError as exc:
        recorded = exc
    if not isinstance(recorded, dict):
        raise LladaptError(f"cannot resume: {saved} is not the JSON object a run writes; the run's recipe is unknown")
    differences = recipe_differences(recorded, config.model_dump(mode="json"))
    if differences:
        raise LladaptError(
            f"cannot resume the run in '{path}': the config changes its recipe:\n  "
            + "\n  ".join(differences)
            + "\nstart a new run (another output_dir) instead"
        )
    read_metrics(path / METRICS_FILE)  # a log the resume could not trim: said before anything is written


def trained_summary(out: Path) -> dict[str, Any] | None:
    """``{"train": ..., "eval_before": ...}`` of a run whose training finished (its final adapter
    is saved), else None."""
    path = out / TRAINED_FILE
    if not trained_summary_exists(out):
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LladaptError(f"{path}: not valid JSON ({exc.msg}); remove it to train again") from None


def write_json(path: Path, data: Any) -> None:
    write_json_atomic(path, data, default=str)


@contextlib.contextmanager
def holding(out: Path, echo: Callable[[str], None]) -> Iterator[None]:
    """One lladapt process per output folder (:mod:`lladapt.common.folder_lock`), held from
    before the model loads to the end, however it ends. Under several processes
    (``accelerate launch``) the main one holds it and the others refuse with it."""
    from lladapt.common.processes import processes

    procs = processes()
    with contextlib.ExitStack() as stack:
        refused = None
        if procs.main:
            try:
                stack.enter_context(locked_folder(out, echo=echo))
            except LladaptError as exc:
                refused = exc
        if procs.world > 1:
            message = procs.from_main(None if refused is None else str(refused))
            if refused is None and message is not None:
                raise FolderInUseError(message)
        if refused is not None:
            raise refused
        yield


@contextlib.contextmanager
def advising(advice: Callable[[], str]) -> Iterator[None]:
    """A failed write (a full disk) says what is safe and how to go on: ``advice()``, e.g.
    :func:`how_to_continue`, is added to its message."""
    try:
        yield
    except WriteError as exc:
        raise exc.add(advice()) from exc.__cause__


#: what an evaluation cut off by a failed write can do next.
EVAL_ADVICE = "free space, then run the same command again: the predictions already written are kept"


def how_to_continue(out: Path, command: str | None) -> str:
    """What a run cut off in ``out`` can do next (the last complete checkpoint, the command that
    continues from it), as one sentence."""
    from lladapt.training.checkpoints import list_checkpoints

    resume = f"`{command} --resume`" if command else "the same command again with --resume (Python: run(config, resume=True))"
    if trained_summary_exists(out):
        return f"the training had finished (adapter in {out / ADAPTER_DIR}); free space, then evaluate it with {resume}"
    checkpoints = list_checkpoints(out / "checkpoints")
    if checkpoints:
        return f"the last complete checkpoint is {checkpoints[0]}; free space, then continue from it with {resume}"
    if (out / CONFIG_FILE).is_file():
        return f"no checkpoint was complete; free space, then start again from step 1 with {resume}"
    again = f"`{command} --overwrite`" if command else "the same command again with --overwrite"
    return f"nothing of the run is usable; free space, then start it again with {again}"


def trained_summary_exists(out: Path) -> bool:
    return (out / TRAINED_FILE).is_file() and (out / ADAPTER_DIR).is_dir()
