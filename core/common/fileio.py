"""Writing files so that a reader never sees one half-written, and the one place where a failed
write (``OSError``: no space left on device, disk quota exceeded, read-only file system, permission
denied...) becomes a clear :class:`~lladapt.common.errors.WriteError` naming the file and the cause
in words (:func:`writing`). Every writer of lladapt writes through these functions or inside
:func:`writing`.

Whole files go to a temporary name beside the target and are renamed over it (atomic on POSIX and
Windows): a process killed mid-write, or a full disk, leaves the previous file intact and no
temporary file behind. Appends (:func:`append_text`) that fail are cut back to the file's previous
end, so a line is either all there or not there.

Libraries that write through their own C++ or Rust writers (``torch.save``, safetensors'
``save_file``) raise errors that do not say the disk is full (``[enforce fail at
inline_container.cc:672] . unexpected pos 19776 vs 19664``); lladapt serialises to bytes in memory
(``torch.save`` into a buffer, ``safetensors.torch.save``) and writes the bytes here instead.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lladapt.common.errors import WriteError

__all__ = ["append_text", "cause_of", "make_dirs", "write_bytes", "write_bytes_atomic",
           "write_json_atomic", "write_text_atomic", "writing"]

#: causes in words, where ``os.strerror`` is terse or platform-specific.
_CAUSES = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
           errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
           errno.EPERM: "operation not permitted"}


def cause_of(exc: OSError) -> str:
    """An ``OSError``'s cause in words, lower case: ``no space left on device``."""
    if exc.errno in _CAUSES:
        return _CAUSES[exc.errno]
    if exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into a :class:`WriteError` naming it."""
    try:
        yield
    except OSError as exc:
        raise WriteError(str(path), cause_of(exc), exc.errno) from exc


def make_dirs(path: Path) -> None:
    """``mkdir -p path``, failures as :class:`WriteError`."""
    with writing(path):
        path.mkdir(parents=True, exist_ok=True)


def write_bytes(path: Path, data: bytes, *, sync: bool = False) -> None:
    """Write ``data`` into ``path``, a file of a folder being built under a temporary name and
    renamed into place when complete (a checkpoint, an adapter folder). ``sync``: to the disk."""
    with writing(path), Path(path).open("wb") as fh:
        fh.write(data)
        if sync:
            fh.flush()
            os.fsync(fh.fileno())


def write_bytes_atomic(path: Path, data: bytes, *, sync: bool = False) -> None:
    """Replace ``path`` by ``data`` in one rename; on any failure nothing is left but the previous
    file. ``sync``: flush to the disk before the rename (the last file of a checkpoint)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with writing(path):
        try:
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                if sync:
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str, *, sync: bool = False) -> None:
    """Replace ``path`` by ``text`` (UTF-8) in one rename (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"), sync=sync)


def write_json_atomic(path: Path, data: Any, **dumps: Any) -> None:
    """Replace ``path`` by ``data`` as indented JSON (``dumps``: more ``json.dumps`` options)."""
    write_text_atomic(path, json.dumps(data, indent=2, **dumps) + "\n")


def append_text(path: Path, text: str) -> None:
    """Append ``text`` (UTF-8) to ``path`` and flush it to the OS (a killed process keeps it).
    A failed append is cut back to the file's previous end: no partial line is left."""
    path = Path(path)
    with writing(path), path.open("ab", buffering=0) as fh:  # unbuffered: nothing left to flush
        start = fh.tell()
        data = memoryview(text.encode("utf-8"))
        try:
            while data:  # a full disk can take part of a write before it refuses the rest
                data = data[fh.write(data):]
        except OSError:
            with contextlib.suppress(OSError):
                fh.truncate(start)
            raise
