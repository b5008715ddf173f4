"""What a sweep finds in a run's folder before it runs it: ``finished`` (skipped), ``partial``
(resumed), ``pending`` (started), or a folder it must not touch (an error naming it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from lladapt.common.errors import FolderInUseError, LladaptError
from lladapt.common.folder_lock import LOCK_FILE, holder_of
from lladapt.common.nested import differences

Status = Literal["finished", "partial", "pending"]

__all__ = ["Status", "run_status"]


def run_status(folder: Path, planned: dict[str, Any]) -> Status:
    """The state of ``folder`` for a run whose resolved config is ``planned`` (``model_dump``).

    A finished run whose saved config differs from the planned one, a folder that holds files
    but no run, or one another process holds (a run of another sweep: the lock of
    :mod:`lladapt.common.folder_lock`, which each run takes), is a :class:`LladaptError`: the
    sweep refuses before it starts anything."""
    from lladapt.api import CONFIG_FILE, RESULTS_FILE

    holder = holder_of(folder)
    if holder is not None:
        raise FolderInUseError(f"run folder '{folder}' is in use by {holder}; wait for it to finish, "
                               "or leave the run out (--only)")
    if not folder.is_dir() or not any(p.name != LOCK_FILE for p in folder.iterdir()):
        return "pending"
    saved_path = folder / CONFIG_FILE
    if not saved_path.is_file():
        raise LladaptError(f"run folder '{folder}' holds files but no {CONFIG_FILE}: it is not a lladapt run; "
                           "move it away or change the sweep's output_dir")
    if not (folder / RESULTS_FILE).is_file():
        return "partial"  # `lladapt run --resume` checks that the recipe is the same
    try:
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LladaptError(f"{saved_path}: not valid JSON ({exc.msg})") from None
    changes = [f"{key}: {a!r} there, {b!r} in the sweep" for key, a, b in differences(saved, planned)]
    if changes:
        raise LladaptError(
            f"run folder '{folder}' holds a finished run of another config:\n  " + "\n  ".join(changes)
            + "\nremove the folder to rerun it, or give the sweep another output_dir"
        )
    return "finished"
