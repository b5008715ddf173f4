"""``lladapt data list | show | overlap | fetch``."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_data_paper import COUNTS, FOURTEEN

from lladapt.cli import cli
from lladapt.cli import data as cli_data


def run(*args: str):
    cli_data.register(cli)
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def data_env(paper_data, monkeypatch, tmp_path):
    monkeypatch.setenv("LLADAPT_DATA_DIR", str(paper_data))
    monkeypatch.setenv("LLADAPT_CACHE_DIR", str(tmp_path / "cache"))
    return paper_data


def test_list_json_shows_the_fourteen_with_the_readmes_counts(data_env, tmp_path):
    result = run("data", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert set(FOURTEEN) <= set(rows)
    for name, splits in COUNTS.items():
        for split, n in splits.items():
            assert rows[name]["splits"][split] == n, (name, split)
    assert rows["hellaswag"]["splits"] == {"train": None, "test": 934}  # train: not local
    assert rows["addsub"]["splits"] == {"test": 395, "heldout": 79}
    assert rows["math_10k"]["splits"] == {"train": None}
    assert rows["arith"]["splits"] == {"train": 1000, "test": 100}
    assert (rows["siqa"]["aliases"], rows["siqa"]["parser"], rows["siqa"]["max_new_tokens"]) == (
        ["social_i_qa"], "choice", 32)
    assert (rows["gsm8k"]["parser"], rows["gsm8k"]["max_new_tokens"]) == ("number", 256)
    assert not (tmp_path / "cache").exists()  # listing never downloads


def test_list_text(data_env):
    result = run("data", "list")
    assert result.exit_code == 0
    line = next(ln for ln in result.output.splitlines() if ln.startswith("addsub "))
    assert line.split()[:7] == ["addsub", "math", "test", "395,", "heldout", "79", "number"]


def test_overlap_json(data_env):
    result = run("data", "overlap", "math_data", "addsub", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {k: report[k] for k in ("train", "eval", "train_records", "eval_records", "seen", "unseen")} == {
        "train": "math_data:train", "eval": "addsub:test", "train_records": 3260,
        "eval_records": 395, "seen": 316, "unseen": 79}
    assert len(report["seen_items"]) == 316
    result = run("data", "overlap", "math_data", "AddSub:heldout")
    assert result.output.strip() == "0 of 79 addsub:heldout items are in math_data:train (3260 records); 79 unseen"


def test_show(data_env):
    result = run("data", "show", "ARC-Easy", "-n", "1", "--json")
    shown = json.loads(result.output)
    assert (shown["name"], shown["split"], shown["records"], len(shown["examples"])) == ("arc_easy", "test", 2376, 1)
    assert shown["examples"][0]["answer"] == "answer1" and shown["examples"][0]["source"] == "arc_easy/test#0"
    result = run("data", "show", "math_data", "-n", "2")
    assert result.output.startswith("math_data / train: 3260 records (parser: number)\n")
    assert result.output.count("\n--- math_data/train#") == 2


def test_errors_are_messages_not_tracebacks(data_env, monkeypatch):
    monkeypatch.setenv("LLADAPT_OFFLINE", "1")
    result = run("data", "show", "gsm8k", "--split", "train")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: dataset 'gsm8k' has no split 'train'; its splits: test, heldout"
    result = run("data", "fetch", "math_10k")
    assert result.exit_code == 1 and "Error: ft-training_set/math_10k.json: not found." in result.output
    result = run("data", "show", "gsm9k")
    assert result.exit_code == 2 and "unknown dataset 'gsm9k'" in result.output
    result = run("data", "fetch", "boolq", "--split", "test")
    assert result.output.strip() == "boolq / test: 3270 records"
