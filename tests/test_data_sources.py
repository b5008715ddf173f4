"""Where data files come from: local folders, the cache, and verified downloads, tested against a
local HTTP server on 127.0.0.1 (no real network)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import socket
import threading
import warnings
from pathlib import Path

import pytest
from assets import shared_asset

from lladapt.common.errors import DataError
from lladapt.data.sources import (
    ChecksumError,
    RemoteFile,
    UnverifiedDownloadWarning,
    cache_dir,
    cached_path,
    locate,
    no_download,
)

RECORDS = [{"instruction": "1 + 1?", "input": "", "output": "2. The answer is 2.", "answer": "2"}]
BODY = json.dumps(RECORDS).encode()
GOOD = hashlib.sha256(BODY).hexdigest()
BAD = "0" * 64


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server(tmp_path):
    """Serves ``tmp_path/www`` on 127.0.0.1 in a thread; yields (root folder, base URL)."""
    root = tmp_path / "www"
    (root / "dataset" / "Toy").mkdir(parents=True)
    (root / "dataset" / "Toy" / "test.json").write_bytes(BODY)
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("LLADAPT_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("LLADAPT_DATA_DIR", "LLADAPT_OFFLINE", "LLADAPT_DATA_URL"):
        monkeypatch.delenv(var, raising=False)


def toy(base: str, sha256: str | None = GOOD, path: str = "dataset/Toy/test.json") -> RemoteFile:
    return RemoteFile(
        path=path, url=f"{base}/{path}", sha256=sha256, cache_key="toy/abc",
        local_paths=(path.removeprefix("dataset/"), path),
    )


def test_good_sha256_downloads_into_the_cache(server, tmp_path):
    _, base = server
    path = locate(toy(base), timeout=5)
    assert path == tmp_path / "cache" / "data" / "toy" / "abc" / "dataset" / "Toy" / "test.json"
    assert path.read_bytes() == BODY
    assert [p.name for p in path.parent.iterdir()] == ["test.json"]  # no temp file left behind
    # the second call is served from the (re-verified) cache: the server is not needed
    assert locate(toy("http://127.0.0.1:9"), timeout=5) == path


def test_bad_sha256_is_an_error_and_nothing_is_saved(server):
    _, base = server
    with pytest.raises(ChecksumError) as info:
        locate(toy(base, sha256=BAD), timeout=5)
    msg = str(info.value)
    assert msg.startswith("dataset/Toy/test.json: sha256 mismatch for http://127.0.0.1:")
    assert f"expected {BAD}, got {GOOD}; the file was not saved" in msg
    target = cached_path(toy(base))
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the temporary file was removed


def test_missing_file_says_which_file_and_how_to_provide_it(server):
    _, base = server
    file = toy(base, path="dataset/Nope/test.json")
    with pytest.raises(DataError) as info:
        locate(file, timeout=5)
    msg = str(info.value)
    assert msg.startswith("dataset/Nope/test.json: not found. Looked in:")
    assert f"\n  - download failed: HTTP 404 File not found from {base}/dataset/Nope/test.json\n" in msg
    assert "LLADAPT_DATA_DIR to a folder holding Nope/test.json or dataset/Nope/test.json" in msg
    assert f"or put the file at {cached_path(file)}." in msg


def test_no_network_is_a_clear_error():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DataError) as info:
        locate(toy(f"http://127.0.0.1:{port}"), timeout=5)
    msg = str(info.value)
    assert "\n  - download failed: " in msg and "Connection refused" in msg
    assert "Provide it in one of these ways" in msg


def test_unpinned_file_records_its_hash_on_first_download(server):
    root, base = server
    with pytest.warns(UnverifiedDownloadWarning, match="no sha256 is pinned for this file"):
        path = locate(toy(base, sha256=None), timeout=5)
    recorded = path.with_name("test.json.sha256")
    assert recorded.read_text().strip() == GOOD
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a cache hit neither warns nor downloads
        assert locate(toy(base, sha256=None), timeout=5) == path
    path.write_bytes(BODY + b" ")  # the cached copy changes: later uses catch it
    with pytest.raises(ChecksumError, match="cached copy does not match its sha256"):
        locate(toy(base, sha256=None), timeout=5)


def test_an_unpinned_file_put_in_the_cache_by_hand_is_recorded(tmp_path):
    file = toy("http://127.0.0.1:9", sha256=None)
    target = cached_path(file)
    target.parent.mkdir(parents=True)
    target.write_bytes(BODY)
    with pytest.warns(UnverifiedDownloadWarning, match="found it in the cache and recorded its sha256"):
        assert locate(file) == target
    assert target.with_name("test.json.sha256").read_text().strip() == GOOD


def test_local_folders_come_first_and_are_trusted_as_given(server, tmp_path, monkeypatch):
    _, base = server
    mine, env = tmp_path / "mine", tmp_path / "env"
    (mine / "Toy").mkdir(parents=True)
    (mine / "Toy" / "test.json").write_text("[]")  # trusted: no hash check on local copies
    (env / "dataset" / "Toy").mkdir(parents=True)
    (env / "dataset" / "Toy" / "test.json").write_text("[1]")
    monkeypatch.setenv("LLADAPT_DATA_DIR", str(env))
    assert locate(toy(base, sha256=BAD), mine) == mine / "Toy" / "test.json"
    assert locate(toy(base, sha256=BAD), tmp_path / "elsewhere") == env / "dataset" / "Toy" / "test.json"


def test_offline_and_no_download_use_local_copies_only(server, monkeypatch):
    _, base = server
    with no_download(), pytest.raises(DataError, match=r"download: not attempted \(local copies only\)"):
        locate(toy(base), timeout=5)
    monkeypatch.setenv("LLADAPT_OFFLINE", "1")
    with pytest.raises(DataError) as info:
        locate(toy(base), timeout=5)
    assert "download: not attempted (LLADAPT_OFFLINE is set)" in str(info.value)
    assert "and unset LLADAPT_OFFLINE" in str(info.value)


def test_cache_dir_follows_the_platform_rules(monkeypatch, tmp_path):
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("LLADAPT_CACHE_DIR")
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "lladapt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "lladapt"


def test_a_paper_dataset_downloads_from_a_mirror(server, monkeypatch):
    """End to end: the AddSub plugin fetches its pinned file from LLADAPT_DATA_URL, verifies it and
    loads its records; a mirror serving other bytes is refused."""
    from lladapt.data.loading import load_examples

    addsub = shared_asset("data", "llm-adapters", "AddSub", "test.json")
    root, base = server
    (root / "dataset" / "AddSub").mkdir()
    (root / "dataset" / "AddSub" / "test.json").write_bytes(addsub.read_bytes())
    monkeypatch.setenv("LLADAPT_DATA_URL", base)
    examples = load_examples("addsub", "test")
    assert len(examples) == 395 and examples[0].answer == "4"
    # a tampered mirror: the same path, other bytes (the cache is emptied first)
    cached = next(Path(cache_dir()).rglob("AddSub/test.json"))
    cached.unlink()
    (root / "dataset" / "AddSub" / "test.json").write_bytes(BODY)
    with pytest.raises(ChecksumError, match="expected 62a8662b1ad4"):
        load_examples("addsub", "test")
