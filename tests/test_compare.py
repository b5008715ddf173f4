"""`lladapt compare`: two runs item by item, with the exact McNemar test."""

from __future__ import annotations

import json
from math import comb

import pytest
from click.testing import CliRunner

from lladapt.cli import _load_core_commands, cli
from lladapt.common.errors import LladaptError
from lladapt.evaluation.paired import compare_runs, mcnemar_exact


def _run(tmp_path, name, entries):
    """A run folder whose eval/<label>.jsonl holds one record per (index, correct[, sha])."""
    folder = tmp_path / name / "eval"
    folder.mkdir(parents=True)
    for label, items in entries.items():
        lines = [json.dumps({"index": i, "correct": c, "prompt_sha": f"sha{i}", "settings": "x"})
                 for i, c in enumerate(items)]
        (folder / f"{label}.jsonl").write_text("\n".join(lines) + "\n")
        (folder / f"{label}.settings.json").write_text("{}")
    return tmp_path / name


def test_exact_mcnemar_matches_the_binomial_tail():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(1, 1) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)  # both tails of Binomial(6, 1/2) at 0
    assert mcnemar_exact(6, 0) == mcnemar_exact(0, 6)
    # 29 vs 48 (LoRA vs series on the paper sweep): 2 * P[Bin(77, .5) <= 29]
    assert mcnemar_exact(29, 48) == pytest.approx(2 * sum(comb(77, i) for i in range(30)) / 2**77)
    assert mcnemar_exact(29, 48) == pytest.approx(0.0395, abs=5e-4)


def test_compare_counts_each_entry_and_pools_them(tmp_path):
    a = _run(tmp_path, "a", {"addsub": [True, True, False, False, True],
                             "gsm8k": [False, False, False]})
    b = _run(tmp_path, "b", {"addsub": [True, False, True, True, True],
                             "gsm8k": [True, True, True]})
    result = compare_runs(a, b)
    addsub, gsm8k = result["entries"]
    assert (addsub["label"], addsub["items"], addsub["correct_a"], addsub["correct_b"]) == ("addsub", 5, 3, 4)
    assert (addsub["only_a"], addsub["only_b"]) == (1, 2)
    assert addsub["p_value"] == 1.0
    assert (gsm8k["only_a"], gsm8k["only_b"], gsm8k["p_value"]) == (0, 3, 0.25)
    pooled = result["all"]
    assert (pooled["items"], pooled["correct_a"], pooled["correct_b"]) == (8, 3, 7)
    assert (pooled["only_a"], pooled["only_b"]) == (1, 5)
    assert pooled["p_value"] == pytest.approx(mcnemar_exact(1, 5))
    assert result["unmatched"] == {}


def test_entries_and_items_one_run_lacks_are_left_out_and_counted(tmp_path):
    a = _run(tmp_path, "a", {"addsub": [True, False, True], "svamp": [True]})
    b = _run(tmp_path, "b", {"addsub": [False, False]})
    result = compare_runs(a, b)
    assert [e["label"] for e in result["entries"]] == ["addsub"]
    assert result["entries"][0]["items"] == 2
    assert result["unmatched"] == {"addsub": 1, "svamp": 1}


def test_items_asked_differently_are_refused_naming_the_item(tmp_path):
    a = _run(tmp_path, "a", {"addsub": [True, False]})
    b = _run(tmp_path, "b", {"addsub": [True, False]})
    path = b / "eval" / "addsub.jsonl"
    path.write_text(path.read_text().replace('"sha1"', '"other"'))
    with pytest.raises(LladaptError, match=r"eval/addsub.jsonl item 1 was asked differently"):
        compare_runs(a, b)


def test_a_bad_record_names_the_file_and_line(tmp_path):
    a = _run(tmp_path, "a", {"addsub": [True]})
    b = _run(tmp_path, "b", {"addsub": [True]})
    (b / "eval" / "addsub.jsonl").write_text('{"index": 0, "correct": true}\n{"index": 1}\n')
    with pytest.raises(LladaptError, match=r"addsub.jsonl, line 2: not a prediction record"):
        compare_runs(a, b)


def test_a_run_without_predictions_is_named(tmp_path):
    a = _run(tmp_path, "a", {"addsub": [True]})
    (tmp_path / "empty").mkdir()
    with pytest.raises(LladaptError, match=r"empty: no predictions"):
        compare_runs(a, tmp_path / "empty")


def test_cli_prints_the_table_and_json(tmp_path):
    _load_core_commands()
    a = _run(tmp_path, "a", {"addsub": [True] * 6 + [False] * 4})
    b = _run(tmp_path, "b", {"addsub": [False] * 6 + [False] * 4})
    out = CliRunner().invoke(cli, ["compare", str(a), str(b)])
    assert out.exit_code == 0, out.output
    assert "| addsub | 10 | 60.0 | 0.0 | 6 | 0 | 0.031 |" in out.output
    assert "| all items | 10 | 60.0 | 0.0 | 6 | 0 | 0.031 |" in out.output
    as_json = CliRunner().invoke(cli, ["compare", str(a), str(b), "--json"])
    assert json.loads(as_json.output)["all"]["p_value"] == pytest.approx(2 / 64)
    missing = CliRunner().invoke(cli, ["compare", str(a), str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_a_last_line_cut_short_by_a_kill_is_left_out(tmp_path):
    a = _run(tmp_path, "a", {"addsub": [True, True]})
    b = _run(tmp_path, "b", {"addsub": [False, False]})
    path = b / "eval" / "addsub.jsonl"
    path.write_text(path.read_text().rstrip("\n")[:-5])  # the second record, half written
    result = compare_runs(a, b)
    assert result["entries"][0]["items"] == 1
    assert result["unmatched"] == {"addsub": 1}
