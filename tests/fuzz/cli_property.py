"""The property every fuzzed case must meet, checked around one ``lladapt`` command run in this
process (click's runner): it exits 0 (the input was fine) or 1 or 2 with exactly one ``Error:``
line, never a traceback nor the catch-all's "unexpected" error, and when it fails, no file under
the watched folders (the inputs, the output folder) was added, removed or changed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner


@dataclass(frozen=True)
class Outcome:
    """What one case did: the family, the exit code and the error line (None when it passed)."""

    family: str
    exit_code: int
    error: str | None


def snapshot(folders: Sequence[Path]) -> dict[Path, bytes]:
    """Every file under ``folders`` and its bytes."""
    files: dict[Path, bytes] = {}
    for folder in folders:
        if folder.is_file():
            files[folder] = folder.read_bytes()
        elif folder.is_dir():
            files.update({p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()})
    return files


@contextlib.contextmanager
def quiet_environment() -> Iterator[None]:
    """No progress bars, no hub access while the corpus runs."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TQDM_DISABLE", "TRANSFORMERS_VERBOSITY")}
    os.environ.update(HF_HUB_OFFLINE="1", TQDM_DISABLE="1", TRANSFORMERS_VERBOSITY="error")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class PropertyFailed(AssertionError):
    pass


def run_cli(family: str, args: Sequence[str], watched: Sequence[Path]) -> Outcome:
    """Run ``lladapt ARGS``; raise :class:`PropertyFailed` (with what it printed) when the property
    does not hold; return the outcome."""
    from lladapt.cli import cli

    before = snapshot(watched)
    result = CliRunner().invoke(cli, list(args))
    output = result.output

    def fail(why: str) -> PropertyFailed:
        inputs = [f"--- {arg}\n{Path(arg).read_text(errors='replace')}" for arg in args
                  if Path(arg).is_file() and Path(arg).stat().st_size < 4000]  # the case, to reproduce it
        return PropertyFailed(f"{why}\n$ lladapt {' '.join(map(str, args))}\nexit {result.exit_code}\n{output}"
                              + (f"\n{result.exception!r}" if result.exception else "") + "\n" + "\n".join(inputs))

    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        raise fail("an exception escaped the CLI:\n" + "".join(traceback.format_exception(result.exception)))
    if result.exit_code not in (0, 1, 2):
        raise fail("exit code not 0, 1 or 2")
    if "Traceback" in output or "Error: unexpected " in output:
        raise fail("a traceback, or an error lladapt did not expect")
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    if result.exit_code == 0:
        if errors:
            raise fail("exit 0 with an error line")
        return Outcome(family, 0, None)
    if len(errors) != 1:
        raise fail(f"{len(errors)} error lines, not one")
    after = snapshot(watched)
    if after != before:
        changed = sorted(str(p) for p in set(before) | set(after) if before.get(p) != after.get(p))
        raise fail(f"a failed command changed files: {changed[:5]}")
    return Outcome(family, result.exit_code, errors[0])
