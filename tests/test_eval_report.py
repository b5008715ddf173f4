"""`lladapt report` over run folders: the Markdown/CSV table and the PNG charts."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from lladapt.cli import _load_core_commands, cli


def _run_folder(path, adapter, scores, losses=(), val=()):
    path.mkdir(parents=True)
    results = {
        "model": "/models/stories260k",
        "adapter": {"name": adapter, "trainable_parameters": 4480} if adapter else None,
        "train": None,
        "eval": [{"dataset": d, "label": label, "split": "test", "accuracy": c / t, "correct": c,
                  "total": t, "unparsed": u, "wrong": t - c - u, "protocol": "fast", "scoring": "generate",
                  **({"stop": ["### Instruction:"]} if label == "gsm8k-test" else {})}
                 for d, label, c, t, u in scores],
    }
    (path / "results.json").write_text(json.dumps(results))
    lines = [{"step": s, "loss": v} for s, v in losses] + [{"step": s, "val_loss": v} for s, v in val]
    (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _invoke(*args):
    _load_core_commands()
    return CliRunner().invoke(cli, ["report", *map(str, args)])


def _tables(out, *runs):
    """``lladapt report RUNS --out OUT --no-charts``, which must succeed: its output and report.md."""
    result = _invoke(*runs, "--out", out, "--no-charts")
    assert result.exit_code == 0, result.output
    return result.output, (out / "report.md").read_text()


def test_report_over_two_runs_writes_the_table_and_charts(tmp_path):
    lora = _run_folder(tmp_path / "lora", "lora", [("addsub", "addsub-test", 30, 40, 2),
                                                    ("gsm8k", "gsm8k-test", 10, 40, 5)],
                       losses=[(1, 2.5), (2, 2.1), (3, 1.7), (4, 1.5)], val=[(2, 2.3), (4, 1.9)])
    base = _run_folder(tmp_path / "base", None, [("addsub", "addsub-test", 10, 40, 9),
                                                  ("arith", "arith-test-2", 1, 4, 0)])
    result = _invoke(lora, base, "--out", tmp_path / "rep")
    assert result.exit_code == 0, result.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| run | model | adapter | trainable params | addsub-test | gsm8k-test | arith-test-2 | Avg | unparsed |" in md
    assert "| lora | stories260k | lora | 4,480 | 75.0 | 25.0 | - | 50.0 | 7/80 |" in md
    assert "| base | stories260k | - | - | 25.0 | - | 25.0 | 25.0 | 9/44 |" in md
    assert "lora: gsm8k-test: stop strings ['### Instruction:']" in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "rep" / "report.csv").read_text())))
    assert [r["run"] for r in rows] == ["lora", "base"]
    assert rows[0]["addsub-test"] == "0.750000" and rows[0]["average"] == "0.500000"
    assert rows[0]["gsm8k-test unparsed"] == "5" and rows[1]["gsm8k-test"] == ""
    for name in ("accuracy.png", "loss.png"):
        png = (tmp_path / "rep" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert result.output.split() == [str(tmp_path / "rep" / n) for n in
                                     ("report.md", "report.csv", "accuracy.png", "loss.png")]


def test_report_reads_a_folder_written_by_lladapt_eval(stories260k, tmp_path):
    from lladapt.api import evaluate

    evaluate({"model": str(stories260k), "output_dir": str(tmp_path / "run"),
              "eval": {"datasets": [{"name": "arith", "test_size": 3}], "max_new_tokens": 4}},
             echo=lambda _: None)
    result = _invoke(tmp_path / "run", "--out", tmp_path / "rep", "--no-charts")
    assert result.exit_code == 0, result.output
    assert "| run | stories260k | - | - |" in (tmp_path / "rep" / "report.md").read_text()
    assert not (tmp_path / "rep" / "accuracy.png").exists()


def test_report_errors_name_the_folder_and_write_nothing(tmp_path):
    good = _run_folder(tmp_path / "good", None, [("addsub", "addsub-test", 1, 2, 0)])
    (tmp_path / "empty").mkdir()
    result = _invoke(good, tmp_path / "empty", "--out", tmp_path / "rep")
    assert result.exit_code == 1
    assert f"'{tmp_path / 'empty'}' is not a run folder: it has no results.json" in result.output
    assert not (tmp_path / "rep").exists()


def test_report_without_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    good = _run_folder(tmp_path / "good", None, [("addsub", "addsub-test", 1, 2, 0)])
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result = _invoke(good, "--out", tmp_path / "rep")
    assert result.exit_code == 1
    assert "pip install 'lladapt[report]'" in result.output
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("flag", ["--no-charts"])
def test_report_tables_need_no_matplotlib(tmp_path, monkeypatch, flag):
    import sys

    good = _run_folder(tmp_path / "good", None, [("addsub", "addsub-test", 1, 2, 0)])
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert _invoke(good, "--out", tmp_path / "rep", flag).exit_code == 0
    assert (tmp_path / "rep" / "report.csv").is_file()


def test_report_gives_the_cost_of_each_run(tmp_path):
    trained = _run_folder(tmp_path / "lora", "lora", [("addsub", "addsub-test", 3, 4, 0)])
    results = json.loads((trained / "results.json").read_text())
    results["train"] = {"steps": 204, "seconds": 1523.4, "final_loss": 0.41234}
    results["eval"][0]["seconds"] = 60.5
    results["eval"].append({**results["eval"][0], "dataset": "svamp", "label": "svamp-test", "seconds": 30.0})
    (trained / "results.json").write_text(json.dumps(results))
    base = _run_folder(tmp_path / "base", None, [("addsub", "addsub-test", 1, 4, 0)])
    _, md = _tables(tmp_path / "rep", trained, base)
    assert "| run | train steps | train s | final loss | eval s |" in md
    assert "| lora | 204 | 1523 | 0.4123 | 90 |" in md
    assert "| base | - | - | - | - |" in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "rep" / "report.csv").read_text())))
    assert (rows[0]["train_steps"], rows[0]["train_seconds"], rows[0]["eval_seconds"]) == ("204", "1523", "90")
    assert rows[1]["train_seconds"] == "" and rows[1]["eval_seconds"] == ""


def _predictions(run, label, correct, sha="q"):
    """eval/<label>.jsonl with one record per item: index, correct, prompt hash."""
    (run / "eval").mkdir(exist_ok=True)
    (run / "eval" / f"{label}.jsonl").write_text("".join(
        json.dumps({"index": i, "correct": c, "prompt_sha": f"{sha}{i}"}) + "\n" for i, c in enumerate(correct)))


def test_report_compares_every_pair_of_runs_item_by_item(tmp_path):
    runs = {}
    for name, addsub in (("lora", [True] * 8 + [False] * 2), ("series", [True] * 2 + [False] * 8),
                         ("base", [False] * 10)):
        runs[name] = _run_folder(tmp_path / name, name, [("addsub", "addsub-test", sum(addsub), 10, 0)])
        _predictions(runs[name], "addsub-test", addsub)
    _predictions(runs["lora"], "gsm8k-test", [True, False])
    _predictions(runs["series"], "gsm8k-test", [True, True])
    no_predictions = _run_folder(tmp_path / "old", "lora", [("addsub", "addsub-test", 1, 10, 0)])
    output, md = _tables(tmp_path / "rep", *runs.values(), no_predictions)
    assert "| A vs B | items | A % | B % | only A right | only B right | p (exact McNemar) | entries with p < 0.05 (p) |" in md
    # lora vs series: 6 items only lora got right on addsub (p = 2/64), 1 only series on gsm8k
    assert "| lora vs series | 12 | 75.0 | 33.3 | 6 | 1 | 0.125 | addsub-test (0.031) |" in md
    assert "| lora vs base | 10 | 80.0 | 0.0 | 8 | 0 | 0.008 | addsub-test (0.008) |" in md
    assert "| series vs base | 10 | 20.0 | 0.0 | 2 | 0 | 0.500 | none |" in md
    assert "- old: left out (" in md and "old: no predictions" in md
    pairs = json.loads((tmp_path / "rep" / "paired.json").read_text())["pairs"]
    assert [(p["run_a"], p["run_b"]) for p in pairs] == [
        (str(runs["lora"]), str(runs["series"])), (str(runs["lora"]), str(runs["base"])),
        (str(runs["series"]), str(runs["base"]))]
    assert pairs[1]["unmatched"] == {"gsm8k-test": 2}
    assert str(tmp_path / "rep" / "paired.json") in output.split()


def test_report_notes_runs_asked_differently_and_still_writes(tmp_path):
    a = _run_folder(tmp_path / "a", "lora", [("addsub", "addsub-test", 1, 2, 0)])
    b = _run_folder(tmp_path / "b", "lora", [("addsub", "addsub-test", 1, 2, 0)])
    _predictions(a, "addsub-test", [True, False])
    _predictions(b, "addsub-test", [True, False], sha="other")
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "paired.json").write_text("{}")  # an earlier report's
    _, md = _tables(tmp_path / "rep", a, b)
    assert "| A vs B |" not in md
    assert "- a vs b: not compared (eval/addsub-test.jsonl item 0 was asked differently" in md
    assert not (tmp_path / "rep" / "paired.json").exists()


def test_runs_of_the_same_name_are_told_apart_by_their_folders(tmp_path):
    from lladapt.evaluation.report import run_labels

    first = _run_folder(tmp_path / "sweep-a" / "lora", "lora", [("addsub", "addsub-test", 1, 2, 0)])
    second = _run_folder(tmp_path / "sweep-b" / "lora", "lora", [("addsub", "addsub-test", 2, 2, 0)])
    alone = _run_folder(tmp_path / "sweep-b" / "series", "series", [("addsub", "addsub-test", 0, 2, 0)])
    for run in (first, second, alone):
        _predictions(run, "addsub-test", [True, False])
    assert run_labels([first, second, alone]) == ["sweep-a/lora", "sweep-b/lora", "series"]
    assert run_labels([tmp_path / "x" / "a" / "r", tmp_path / "y" / "a" / "r"]) == ["x/a/r", "y/a/r"]
    assert run_labels([first, first]) == ["lora", "lora"]  # one folder twice: nothing tells them apart
    _, md = _tables(tmp_path / "rep", first, second, alone)
    assert "| sweep-a/lora | stories260k | lora | 4,480 | 50.0 |" in md
    assert "| sweep-b/lora | - | - | - | - |" in md  # the cost table
    assert "| sweep-a/lora vs sweep-b/lora | 2 |" in md and "| sweep-b/lora vs series | 2 |" in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "rep" / "report.csv").read_text())))
    assert [r["run"] for r in rows] == ["sweep-a/lora", "sweep-b/lora", "series"]
