"""Where a data file comes from: a local folder, the user's cache, or a verified download.

A dataset plugin describes each file it needs as a :class:`RemoteFile` (its path in an upstream
repository, the URL to fetch it from, its pinned sha256 when known, and where it may sit inside a
local folder) and calls :func:`locate`, which tries, in order:

1. the ``data_dir`` the user gave (config ``data.data_dir`` or the dataset's own ``data_dir``);
2. the folder in ``LLADAPT_DATA_DIR``;
3. the user's cache (``LLADAPT_CACHE_DIR``, else the platform's cache folder), re-verified;
4. a download (unless ``LLADAPT_OFFLINE`` is set or :func:`no_download` is active), written to a
   temporary file and renamed into the cache only after its sha256 matches the pin.

Local folders are the user's own copies and are trusted as given. Downloads are verified: against
the pinned sha256 when the plugin knows it; when it does not, the hash of the first download is
recorded beside the cached file (trust on first use, with a warning) and every later use of the
cached file is checked against that record.

When every source fails, the :class:`~lladapt.common.errors.DataError` says which file is missing, where
it looked, and the ways to provide it.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lladapt.common.errors import DataError
from lladapt.common.fileio import make_dirs, write_text_atomic, writing

__all__ = [
    "CACHE_ENV",
    "ChecksumError",
    "DATA_DIR_ENV",
    "OFFLINE_ENV",
    "RemoteFile",
    "UnverifiedDownloadWarning",
    "cache_dir",
    "download",
    "locate",
    "no_download",
    "sha256_of",
]

DATA_DIR_ENV = "LLADAPT_DATA_DIR"
CACHE_ENV = "LLADAPT_CACHE_DIR"
OFFLINE_ENV = "LLADAPT_OFFLINE"
#: seconds a download may stall before it is abandoned.
DOWNLOAD_TIMEOUT = 60.0

log = logging.getLogger("lladapt.data.loading")


class ChecksumError(DataError):
    """A downloaded or cached file does not have the sha256 it must have."""


class UnverifiedDownloadWarning(UserWarning):
    """A file was downloaded without a pinned sha256; its hash was recorded on first use."""


@dataclass(frozen=True)
class RemoteFile:
    """One data file a dataset needs, and everywhere it may be found."""

    #: its path in the upstream repository, e.g. ``dataset/AddSub/test.json``.
    path: str
    #: where to download it from.
    url: str
    #: its sha256 at the pinned upstream revision; None when not known in advance.
    sha256: str | None
    #: folder under the cache that holds this upstream revision, e.g. ``llm-adapters/8166572``.
    cache_key: str
    #: paths relative to a local data folder where the file may sit, tried in order.
    local_paths: tuple[str, ...] = ()

    @property
    def candidates(self) -> tuple[str, ...]:
        return self.local_paths or (self.path,)


# --------------------------------------------------------------------------- cache folder


def cache_dir() -> Path:
    """lladapt's cache folder: ``LLADAPT_CACHE_DIR``, else the platform's user cache folder
    (``$XDG_CACHE_HOME/lladapt`` or ``~/.cache/lladapt`` on Linux, ``~/Library/Caches/lladapt`` on
    macOS, ``%LOCALAPPDATA%\\lladapt\\Cache`` on Windows)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "lladapt" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "lladapt"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "lladapt"


def cached_path(file: RemoteFile) -> Path:
    """Where ``file`` lives in the cache once downloaded."""
    return cache_dir() / "data" / file.cache_key / file.path


def _recorded_hash_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


# --------------------------------------------------------------------------- download switch

_download_allowed: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "lladapt_download_allowed", default=True
)


@contextlib.contextmanager
def no_download() -> Iterator[None]:
    """Within this block :func:`locate` uses local copies only (``lladapt data list`` counts
    records without fetching anything)."""
    token = _download_allowed.set(False)
    try:
        yield
    finally:
        _download_allowed.reset(token)


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


# --------------------------------------------------------------------------- hashing, download


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str | None, *, timeout: float = DOWNLOAD_TIMEOUT) -> str:
    """Fetch ``url`` into ``dest`` atomically; returns the file's sha256.

    The bytes go to a temporary file beside ``dest``, which is renamed to ``dest`` only after its
    sha256 matches ``sha256`` (when given), so a failed or tampered download never leaves a file
    that looks complete. Raises :class:`DataError` on HTTP errors, network errors and mismatches.
    """
    make_dirs(dest.parent)
    with writing(dest):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        digest.update(chunk)
                        out.write(chunk)
            except urllib.error.HTTPError as exc:
                raise DataError(f"download failed: HTTP {exc.code} {exc.reason} from {url}") from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise DataError(f"download failed: {reason} ({url})") from None
        got = digest.hexdigest()
        if sha256 is not None and got != sha256.lower():
            raise ChecksumError(
                f"sha256 mismatch for {url}: expected {sha256}, got {got}; the file was not saved"
            )
        os.replace(tmp, dest)
        return got
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- locate


def _local(folder: Path, file: RemoteFile) -> Path | None:
    for rel in file.candidates:
        path = folder / rel
        if path.is_file():
            return path
    return None


def _verified_cache(file: RemoteFile) -> Path | None:
    """The cached copy of ``file`` if present, after checking it against the pin (or against the
    hash recorded when it was first downloaded)."""
    path = cached_path(file)
    if not path.is_file():
        return None
    expected = file.sha256
    recorded = _recorded_hash_path(path)
    if expected is None and recorded.is_file():
        expected = recorded.read_text(encoding="utf-8").strip() or None
    got = sha256_of(path)
    if expected is None:  # put there by hand, or a download cut off before its record
        _record(file, path, got, "found it in the cache")
    elif got != expected.lower():
        raise ChecksumError(
            f"cached copy does not match its sha256 (expected {expected}, got {got}); "
            "delete it to download it again",
            file=str(path),
        )
    return path


def _fetch(file: RemoteFile, timeout: float) -> Path:
    dest = cached_path(file)
    log.info("downloading %s -> %s", file.url, dest)
    got = download(file.url, dest, file.sha256, timeout=timeout)
    if file.sha256 is None:
        _record(file, dest, got, f"downloaded it from {file.url}")
    return dest


def _record(file: RemoteFile, path: Path, sha256: str, how: str) -> None:
    """Trust on first use: keep the hash of an unpinned file beside it, and say so."""
    recorded = _recorded_hash_path(path)
    write_text_atomic(recorded, sha256 + "\n")
    warnings.warn(
        f"{file.path}: no sha256 is pinned for this file; {how} and recorded its sha256 {sha256} "
        f"in {recorded} (later uses are checked against it)",
        UnverifiedDownloadWarning,
        stacklevel=4,
    )


def _ways_to_provide(file: RemoteFile) -> str:
    return (
        "Provide it in one of these ways: set `data_dir` (config `data.data_dir`, or the "
        f"dataset's own `data_dir`) or {DATA_DIR_ENV} to a folder holding "
        f"{' or '.join(file.candidates)}; or allow the download (network access to {file.url}"
        f"{', and unset ' + OFFLINE_ENV if _offline() else ''}); or put the file at "
        f"{cached_path(file)}."
    )


def locate(
    file: RemoteFile,
    data_dir: str | Path | None = None,
    *,
    timeout: float = DOWNLOAD_TIMEOUT,
) -> Path:
    """The local path of ``file``: from ``data_dir``, ``LLADAPT_DATA_DIR``, the cache, or a
    verified download, in that order. Raises :class:`DataError` naming every place tried."""
    tried: list[str] = []
    env_dir = os.environ.get(DATA_DIR_ENV)
    for label, folder in (("data_dir", data_dir), (DATA_DIR_ENV, env_dir)):
        if not folder:
            continue
        folder = Path(folder).expanduser()
        found = _local(folder, file)
        if found is not None:
            return found
        where = "folder does not exist" if not folder.is_dir() else "not there"
        tried.append(f"{label} {folder}: {where}")
    cached = _verified_cache(file)
    if cached is not None:
        return cached
    tried.append(f"cache {cached_path(file)}: not there")
    if not _download_allowed.get():
        tried.append("download: not attempted (local copies only)")
    elif _offline():
        tried.append(f"download: not attempted ({OFFLINE_ENV} is set)")
    else:
        try:
            return _fetch(file, timeout)
        except ChecksumError as exc:
            raise ChecksumError(str(exc), file=file.path) from None
        except DataError as exc:
            tried.append(str(exc))
    lines = "\n".join(f"  - {t}" for t in tried)
    raise DataError(f"not found. Looked in:\n{lines}\n{_ways_to_provide(file)}", file=file.path)
