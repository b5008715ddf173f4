"""Writing a small file so that a reader never sees it half-written: the text goes to a temporary
name beside it, then is renamed over it (atomic on POSIX and Windows). A process killed mid-write
leaves the previous file intact."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["write_json_atomic", "write_text_atomic"]


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8) in one rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any, **dumps: Any) -> None:
    """Replace ``path`` by ``data`` as indented JSON (``dumps``: more ``json.dumps`` options)."""
    write_text_atomic(path, json.dumps(data, indent=2, **dumps) + "\n")
