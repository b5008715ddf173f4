"""Faults for the tests of what a run does when the disk fails it (not a test module): a write
that fails as a full disk would (``OSError`` ENOSPC, or another errno), injected where Python
opens the file, so that lladapt's own translation (``lladapt.common.fileio.writing``) is what the
tests see; and a real small tmpfs where this machine lets the tests mount one."""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner


class _FailingFile:
    """A file opened for writing whose writes fail with ``code`` (its bytes never reach the disk)."""

    def __init__(self, handle, code: int):
        self._handle, self._code = handle, code

    def write(self, data) -> int:
        raise OSError(self._code, os.strerror(self._code))

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()


def fail_writes(monkeypatch: pytest.MonkeyPatch, when: Callable[[Path], bool], code: int = errno.ENOSPC) -> list[Path]:
    """From now on, files for which ``when(path)`` is true open for writing (``w``/``a``/``x``
    modes through ``Path.open``, as every lladapt writer opens them) but fail to write with
    ``code``. Returns the list of paths that failed (appended to as they do)."""
    failed: list[Path] = []
    original = pathlib.Path.open

    def opening(self, mode="r", *args, **kwargs):
        handle = original(self, mode, *args, **kwargs)
        if any(c in mode for c in "wax") and when(self):
            failed.append(self)
            return _FailingFile(handle, code)
        return handle

    monkeypatch.setattr(pathlib.Path, "open", opening)
    return failed


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder`` (skips the test where mounting is not allowed:
    not root, no CAP_SYS_ADMIN); unmounted at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def grow_tmpfs(folder: Path, size: str) -> None:
    """Free space: the tmpfs on ``folder`` grows to ``size``, its files kept."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True, capture_output=True)


def lladapt(*args: str):
    """``lladapt ARGS`` in this process (click's runner): exit code, stdout and stderr apart."""
    from lladapt.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def error_line(result) -> str:
    """The one ``Error:`` line a failed command printed (the test fails if there is not exactly
    one, or if a traceback was printed)."""
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def config_file(path: Path, config: dict) -> Path:
    """``config`` written as JSON to ``path``; returns the path."""
    import json

    path.write_text(json.dumps(config))
    return path


def snapshot(folder: Path) -> dict[Path, bytes]:
    """Every file under ``folder`` (relative path) and its bytes."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def two_run_sweep(tmp_path: Path, model: Path) -> Path:
    """A sweep spec of two one-step LoRA runs (r 2 and 4: folders ``r-2``, ``r-4``) into
    ``tmp_path/sweep``."""
    import yaml

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({
        "output_dir": str(tmp_path / "sweep"),
        "base": {"model": str(model), "adapter": {"name": "lora", "r": 4},
                 "data": {"train": [{"name": "arith", "limit": 4}]}, "train": {"max_steps": 1}},
        "grid": {"adapter.r": [2, 4]},
    }))
    return spec
