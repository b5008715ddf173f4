"""Where a run's progress messages go: a function of one line, standard error by default (the
CLI's; a caller of the Python API may pass its own)."""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["Echo", "to_stderr"]

Echo = Callable[[str], None]


def to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
