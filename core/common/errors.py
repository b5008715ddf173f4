"""The exceptions lladapt raises on purpose.

Every error a user can cause is a :class:`LladaptError`. The CLI prints its message (no traceback
unless ``--debug``) and exits with its ``exit_code``: 2 for usage and config errors, 1 otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class LladaptError(Exception):
    """Base class of every error lladapt reports to a user."""

    exit_code: int = 1


@dataclass(frozen=True)
class ErrorItem:
    """One problem found in a config: where (dotted path) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(LladaptError):
    """A config (file, ``--set`` override or Python dict) is invalid.

    Holds every problem found in one pass, each under its dotted path.
    """

    exit_code = 2

    def __init__(self, errors: Sequence[ErrorItem] | str, source: str | None = None):
        if isinstance(errors, str):
            errors = [ErrorItem("", errors)]
        self.errors: list[ErrorItem] = list(errors)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        where = f" '{self.source}'" if self.source else ""
        n = len(self.errors)
        if n == 1 and not self.errors[0].path:
            return f"invalid config{where}: {self.errors[0].message}"
        head = f"invalid config{where} ({n} error{'s' if n != 1 else ''}):"
        return "\n".join([head, *(f"  {e}" for e in self.errors)])


class UnknownComponentError(LladaptError):
    """A component name (adapter, dataset, ...) that no plugin registered. ``reason`` says why
    when lladapt knows (a plugin that could provide it is disabled)."""

    exit_code = 2

    def __init__(
        self,
        kind: str,
        name: str,
        known: Sequence[str],
        suggestion: str | None = None,
        reason: str | None = None,
    ):
        self.kind, self.name, self.known, self.suggestion = kind, name, list(known), suggestion
        self.reason = reason
        head = f"{kind} '{name}' is not available: {reason}" if reason else f"unknown {kind} '{name}'"
        msg = f"{head}. Registered: {', '.join(sorted(known)) or '(none)'}"
        if suggestion:
            msg += f"; did you mean '{suggestion}'?"
        super().__init__(msg)


class PluginError(LladaptError):
    """A plugin is broken: it failed to import, or registered a name twice."""


class DataError(LladaptError):
    """A data file is missing or malformed. Names the file, the record index and the field."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        index: int | None = None,
        field: str | None = None,
    ):
        self.file, self.index, self.field = file, index, field
        where = []
        if file is not None:
            where.append(str(file))
        if index is not None:
            where.append(f"record {index}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


class ModelLoadError(LladaptError):
    """A model or tokenizer cannot be found or loaded."""


class PlacementError(LladaptError):
    """A placement names a layer or module the backbone does not have."""

    exit_code = 2


class AdapterError(LladaptError):
    """An adapter cannot be attached, saved or loaded as asked."""


class WriteError(LladaptError):
    """A file could not be written (no space left, quota, read-only file system, no permission...).

    Raised by :func:`lladapt.common.fileio.writing` and only there: ``path`` is the file, ``cause``
    the reason in words. Stages above add what the user can do next (:meth:`add`): the last
    complete checkpoint and the command that continues the run."""

    def __init__(self, path: str, cause: str, errno: int | None = None):
        self.path, self.cause, self.errno = path, cause, errno
        self.advice: list[str] = []
        super().__init__(path, cause)

    def moved(self, tmp: object, final: object) -> WriteError:
        """Name the file as it would have been in ``final``, the folder that was being built as
        ``tmp`` (and was removed); returns the error."""
        self.path = self.path.replace(str(tmp), str(final), 1)
        return self

    def add(self, advice: str) -> WriteError:
        """Append what to do next to the message; returns the error."""
        self.advice.append(advice)
        return self

    def __str__(self) -> str:
        return "; ".join([f"cannot write {self.path}: {self.cause}", *self.advice])


class FolderInUseError(LladaptError):
    """Another lladapt process holds the folder's lock (:mod:`lladapt.common.folder_lock`)."""
