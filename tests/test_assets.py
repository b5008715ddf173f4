"""The shared-assets rule every test goes through (tests/assets.py): skip only when there is no
shared folder at all; a shared folder that lacks a file fails the test with the missing path."""

from __future__ import annotations

import pytest
from assets import ABSENT, shared_asset

from lladapt import testing


def outcome(*parts: str) -> tuple[str, str]:
    """What shared_asset does to a test asking for ``parts``: ("found", path), ("fail", message)
    or ("skip", reason); caught here so that a wrong skip fails this test instead of skipping it."""
    try:
        return "found", str(shared_asset(*parts))
    except pytest.fail.Exception as error:
        return "fail", str(error)
    except pytest.skip.Exception as error:
        return "skip", str(error)


def test_a_shared_folder_lacking_the_file_fails_with_its_path(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    monkeypatch.setenv("LLADAPT_SHARED_DIR", str(tmp_path))
    missing = tmp_path / "models" / "stories260k" / "config.json"
    assert outcome("models", "stories260k", "config.json") == (
        "fail", f"{missing} is missing: the shared assets folder {tmp_path} lacks it")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        testing.stories260k_dir()  # what benchmarks/ uses: an error too, not "absent"


def test_an_empty_or_misnamed_shared_folder_fails_rather_than_skips(tmp_path, monkeypatch):
    monkeypatch.setenv("LLADAPT_SHARED_DIR", str(tmp_path / "typo"))
    kind, message = outcome("data", "llm-adapters")
    assert kind == "fail" and message.startswith(f"{tmp_path / 'typo' / 'data' / 'llm-adapters'} is missing")
    monkeypatch.delenv("LLADAPT_SHARED_DIR")
    monkeypatch.setattr(testing, "CHECKOUT_PARENT", tmp_path)
    (tmp_path / "shared").mkdir()  # ../shared exists, empty: a broken copy, not a plain checkout
    kind, message = outcome("docs", "DESIGN.md")
    assert kind == "fail" and message.startswith(f"{tmp_path / 'shared' / 'docs' / 'DESIGN.md'} is missing")


def test_no_shared_folder_at_all_skips(tmp_path, monkeypatch):
    monkeypatch.delenv("LLADAPT_SHARED_DIR", raising=False)
    monkeypatch.setattr(testing, "CHECKOUT_PARENT", tmp_path)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert outcome("models", "stories260k", "config.json") == ("skip", ABSENT)
    assert testing.stories260k_dir() is None and testing.paper_data_dir() is None


def test_present_assets_are_found(tmp_path, monkeypatch):
    (tmp_path / "data" / "llm-adapters").mkdir(parents=True)
    monkeypatch.setenv("LLADAPT_SHARED_DIR", str(tmp_path))
    assert outcome("data", "llm-adapters") == ("found", str(tmp_path / "data" / "llm-adapters"))
