"""One lladapt process per output folder: an exclusive lock on ``<folder>/.lladapt.lock``.

The lock is the kernel's (``fcntl.flock``), so it goes away with its process however that ends
(an exception, SIGTERM, SIGKILL, a crash): there is no lock a dead process can keep. The file
holds who took it (pid, host, start time, command line), which the refusal names. A file left by
a process that is gone (killed before it could remove it) is taken over, saying so; a file left by
a process on another host (a shared file system) is not, since this host cannot tell whether that
process still runs: the message says to delete it if it does not.

On release the file is removed (and the folder, when the lock created it and nothing else was
written there). Where there is no kernel lock (Windows; a network file system mounted without
locking) the holder file alone decides: a holder on this host whose process still runs refuses.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from lladapt.common.errors import FolderInUseError, LladaptError
from lladapt.common.fileio import writing

__all__ = ["LOCK_FILE", "FolderLock", "holder_of", "locked_folder"]

LOCK_FILE = ".lladapt.lock"


def _try_lock(fd: int) -> bool | None:
    """Take the kernel lock on ``fd`` without waiting: True when taken, False when another
    process holds it, None when there is no kernel lock here (Windows; a network file system
    mounted without locking), where the holder file alone decides."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP):
            return None
        raise
    return True


def _alive(holder: dict[str, Any] | None) -> bool:
    """Whether the process a holder file names (on this host) may still run."""
    pid = holder.get("pid") if holder else None
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    if sys.platform == "win32":  # pragma: no cover - os.kill would end the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, under another user
        return True
    return True


def _read_holder(fd: int) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 1 << 16).decode("utf-8"))
        if isinstance(data, dict):
            return data
    return None


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another lladapt process"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {when} ({holder.get('command')})"


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


class FolderLock:
    """The lock of one folder, taken by :meth:`acquire` and given back by :meth:`release`."""

    def __init__(self, folder: str | Path, what: str = "output_dir"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.what = what
        self._fd: int | None = None
        self._created = False

    def acquire(self, echo: Callable[[str], None] = lambda _: None) -> None:
        """Take the lock or raise :class:`FolderInUseError` naming the holder; creates the folder."""
        if self.folder.exists() and not self.folder.is_dir():
            raise LladaptError(f"{self.what} '{self.folder}' exists and is not a folder")
        self._created = not self.folder.exists()
        with writing(self.path):
            self.folder.mkdir(parents=True, exist_ok=True)
            while self._fd is None:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    self._fd = self._take(fd, echo)
                except BaseException:
                    os.close(fd)
                    raise

    def _take(self, fd: int, echo: Callable[[str], None]) -> int | None:
        """``fd`` once it holds the lock of the file still at :attr:`path`; None to try again
        (the holder removed the file between our open and our lock)."""
        locked = _try_lock(fd)
        for _ in range(5):  # a moment for a look by holder_of (it takes the lock to test it) to end
            if locked is not False:
                break
            time.sleep(0.02)
            locked = _try_lock(fd)
        left = _read_holder(fd)
        here = not left or left.get("host") == socket.gethostname()
        if locked is False or (locked is None and here and _alive(left)):
            raise FolderInUseError(
                f"{self.what} '{self.folder}' is in use by {_describe(left)}; wait for "
                f"it to finish, or use another {self.what}"
            )
        if not _same_file(fd, self.path):
            os.close(fd)
            return None
        if not here:
            raise FolderInUseError(
                f"{self.what} '{self.folder}' is locked by {_describe(left)}, which this host cannot "
                f"check; if that process no longer runs, delete {self.path}"
            )
        if left and left.get("pid") != os.getpid():
            echo(f"taking over the lock of '{self.folder}' left by {_describe(left)}, which no longer runs")
        os.ftruncate(fd, 0)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "command": shlex.join(sys.argv)}
        os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
        return fd

    def release(self) -> None:
        """Remove the lock file and give the lock back (and the folder, when the lock created it
        and it is still empty)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if _same_file(self._fd, self.path):
                self.path.unlink()
        os.close(self._fd)  # closing gives the kernel lock back
        self._fd = None
        if self._created:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only succeeds when empty


def holder_of(folder: str | Path) -> str | None:
    """Who holds the lock of ``folder`` now (described), None when nobody does. Creates nothing
    (it takes the lock for an instant to test it; :meth:`FolderLock.acquire` waits that out)."""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        locked, holder = _try_lock(fd), _read_holder(fd)
        if locked is False or (locked is None and holder and holder.get("host") == socket.gethostname()
                               and _alive(holder)):
            return _describe(holder)
        return None
    finally:
        os.close(fd)


class _Terminated(SystemExit):
    """SIGTERM outside the training loop, raised so that the lock is given back on the way out."""


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated(128 + signum)


@contextlib.contextmanager
def locked_folder(folder: str | Path, *, what: str = "output_dir",
                  echo: Callable[[str], None] = lambda _: None) -> Iterator[FolderLock]:
    """Hold ``folder``'s lock for the ``with`` block, given back on every way out. While held,
    SIGTERM (when nothing else handles it) exits through the block instead of killing the
    process where it stands (the training loop's own handler saves a checkpoint first)."""
    lock = FolderLock(folder, what)
    lock.acquire(echo)
    previous = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield lock
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        lock.release()
