"""Where a benchmark figure comes from: the commit of the lladapt code it measured."""

from __future__ import annotations

import subprocess
from pathlib import Path


def commit() -> str:
    """The commit of the lladapt code measured: the git checkout that holds the imported
    ``lladapt`` package (``+dirty`` when the package's tracked sources, ``core/``, ``plugins/``,
    ``registry/`` or ``pyproject.toml``, differ from the commit; an edited doc does not count)."""
    import lladapt

    where = Path(lladapt.__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=where).stdout.strip()

    code = (":/core", ":/plugins", ":/registry", ":/pyproject.toml")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", *code)
    return git("rev-parse", "HEAD") + ("+dirty" if dirty else "")
