"""The paper's datasets on the reference copy in ../shared/data/llm-adapters: names and aliases,
record counts, the v1 held-out split, the train/test overlap check."""

from __future__ import annotations

import warnings

import pytest

from lladapt import get_registry
from lladapt.common.errors import DataError
from lladapt.data.loading import build_dataset, load_examples, load_run_data
from lladapt.data.overlap import DataOverlapWarning, check_overlap, find_overlap

FOURTEEN = ("gsm8k", "svamp", "multiarith", "addsub", "aqua", "singleeq", "boolq", "piqa", "siqa",
            "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")

#: the README's record counts (hellaswag: the 934-record prefix).
COUNTS = {
    "addsub": {"test": 395}, "multiarith": {"test": 600}, "singleeq": {"test": 508},
    "gsm8k": {"test": 1319}, "aqua": {"test": 254}, "svamp": {"test": 1000},
    "mawps": {"test": 238}, "mathqa": {"test": 2985},
    "boolq": {"test": 3270, "train": 9427}, "piqa": {"test": 1838}, "siqa": {"test": 1954},
    "hellaswag": {"test": 934}, "winogrande": {"test": 1267},
    "arc_easy": {"test": 2376, "train": 2251}, "arc_challenge": {"test": 1172, "train": 1119},
    "openbookqa": {"test": 500, "train": 4957}, "math_data": {"train": 3260},
}

#: the v1 paper's held-out split sizes (test items not in math_data.json).
HELDOUT = {"addsub": 79, "multiarith": 109, "singleeq": 102, "gsm8k": 264, "aqua": 51, "svamp": 200}


@pytest.fixture
def data_env(paper_data, monkeypatch, tmp_path):
    monkeypatch.setenv("LLADAPT_DATA_DIR", str(paper_data))
    monkeypatch.setenv("LLADAPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LLADAPT_OFFLINE", "1")
    return paper_data


def test_names_and_the_paper_codes_folder_names_as_aliases():
    registry = get_registry("dataset")
    for name in FOURTEEN + ("mawps", "mathqa", "math_data", "math_10k", "math_7k", "math_14k",
                            "math_50k", "commonsense_15k", "commonsense_170k", "arith", "json"):
        assert registry.canonical(name) == name
    folders = {"AddSub": "addsub", "MultiArith": "multiarith", "SingleEq": "singleeq",
               "AQuA": "aqua", "SVAMP": "svamp", "social_i_qa": "siqa", "ARC-Easy": "arc_easy",
               "ARC-Challenge": "arc_challenge", "obqa": "openbookqa", "jsonl": "json"}
    for alias, name in folders.items():
        assert registry.canonical(alias) == name


def test_record_counts_match_the_readme(data_env):
    for name, splits in COUNTS.items():
        for split, n in splits.items():
            assert len(load_examples(name, split)) == n, (name, split)


def test_heldout_split_sizes(data_env):
    assert {name: len(load_examples(name, "heldout")) for name in HELDOUT} == HELDOUT
    assert sum(HELDOUT.values()) == 805
    training = load_examples("math_data")
    for name in HELDOUT:  # held out means: nothing of it is in the training set
        assert find_overlap(training, load_examples(name, "heldout")).seen_count == 0


def test_overlap_math_data_addsub(data_env):
    report = find_overlap(load_examples("math_data"), load_examples("addsub", "test"),
                          train_name="math_data", eval_name="addsub")
    assert (report.seen_count, report.eval_records, report.unseen_count) == (316, 395, 79)
    assert report.seen[0].source == "addsub/test#0"
    assert report.summary() == "316 of 395 addsub items are in the training data math_data (3260 records)"


def test_missing_upstream_file_offline_names_the_file_and_the_ways(data_env):
    with pytest.raises(DataError) as info:
        load_examples("math_10k")
    msg = str(info.value)
    assert msg.startswith("ft-training_set/math_10k.json: not found. Looked in:")
    assert f"LLADAPT_DATA_DIR {data_env}: not there" in msg
    assert "download: not attempted (LLADAPT_OFFLINE is set)" in msg
    assert "to a folder holding ft-training_set/math_10k.json or math_10k.json" in msg
    assert ("https://raw.githubusercontent.com/AGI-Edgerunners/LLM-Adapters/"
            "816657208af4db747803f87ba40a4c71383fed7a/ft-training_set/math_10k.json") in msg


def test_a_data_dir_in_the_repositorys_own_layout(paper_data, tmp_path, monkeypatch):
    """A clone of the paper repository (dataset/<Folder>/...) works as a data_dir too."""
    monkeypatch.setenv("LLADAPT_OFFLINE", "1")
    monkeypatch.delenv("LLADAPT_DATA_DIR", raising=False)
    (tmp_path / "dataset" / "SVAMP").mkdir(parents=True)
    (tmp_path / "dataset" / "SVAMP" / "test.json").symlink_to(paper_data / "SVAMP" / "test.json")
    assert len(load_examples({"name": "SVAMP", "data_dir": str(tmp_path)}, "test")) == 1000
    assert len(load_examples("svamp", "test", data_dir=tmp_path)) == 1000
    assert build_dataset("svamp", data_dir=tmp_path).config.data_dir == tmp_path


def _config(action: str, train="math_data", evaluation=("addsub", "arith")):
    from lladapt.config import load_config

    return load_config({"model": "llama-7b", "data": {"train": [train], "overlap": action},
                        "eval": {"datasets": list(evaluation)}})


def test_a_run_whose_training_data_overlaps_its_evaluation_data(data_env):
    with pytest.warns(DataOverlapWarning, match="316 of 395 addsub:test items are in the training data math_data:train"):
        reports = check_overlap(_config("warn"))
    assert [(r.eval, r.seen_count) for r in reports] == [("addsub:test", 316)]
    with pytest.raises(DataError, match=r"(?s)316 of 395 addsub:test.*Set data.overlap=warn to run anyway"):
        check_overlap(_config("error"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_overlap(_config("ignore")) == []
        assert check_overlap(_config("error", evaluation=({"name": "addsub", "split": "heldout"},))) == []
        assert check_overlap(_config("error", train="arith", evaluation=("arith",))) == []


def test_sets_are_labelled_by_their_dataset_name_not_the_alias_used(data_env):
    config = _config("warn", train={"name": "math_data"}, evaluation=("AddSub", "ARC-Easy"))
    data = load_run_data(config)
    assert [s.label for s in data.train] == ["math_data:train"]
    assert [s.label for s in data.eval] == ["addsub:test", "arc_easy:test"]
    with pytest.warns(DataOverlapWarning, match="316 of 395 addsub:test items are in the training data math_data:train"):
        (report,) = check_overlap(config, data)
    assert (report.train, report.eval) == ("math_data:train", "addsub:test")
