"""The published results trace to runs: every accuracy in a sweep report under docs/results is the
one in the committed copy of that run's results.json, and the page that presents a report copies
its tables unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
REPORTS = sorted(p.parent for p in RESULTS.glob("*/report.md"))


def _tables(text: str) -> list[str]:
    """Each markdown table in ``text`` (its consecutive lines that start with '|')."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append("\n".join(current))
            current = []
    return tables


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("|").split("|")]


def _table(text: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the first markdown table in ``text``."""
    lines = _tables(text)[0].splitlines()
    return _cells(lines[0]), [_cells(line) for line in lines[2:]]


@pytest.mark.parametrize("report", REPORTS, ids=[p.name for p in REPORTS])
def test_every_reported_accuracy_is_the_committed_runs(report):
    header, rows = _table((report / "report.md").read_text())
    assert rows
    for row in rows:
        cells = dict(zip(header, row, strict=True))
        results = report / "runs" / cells["run"] / "results.json"
        assert results.is_file(), f"{results} is not committed: the row '{cells['run']}' traces to nothing"
        evals = {e["label"]: e for e in json.loads(results.read_text())["eval"]}
        for label, entry in evals.items():
            assert cells[label] == f"{100 * entry['accuracy']:.1f}", (cells["run"], label)
        unparsed = sum(e["unparsed"] for e in evals.values())
        assert cells["unparsed"] == f"{unparsed}/{sum(e['total'] for e in evals.values())}"


@pytest.mark.parametrize("report", REPORTS, ids=[p.name for p in REPORTS])
def test_the_results_page_copies_the_reports_tables(report):
    page = report.with_suffix(".md")
    if not page.exists():
        pytest.skip(f"no page presents {report.name}")
    shown = page.read_text()
    tables = _tables((report / "report.md").read_text())
    assert tables
    for table in tables:
        assert table in shown, f"{page.name} does not show this table of {report.name}/report.md as it is:\n{table}"


@pytest.mark.parametrize("report", REPORTS, ids=[p.name for p in REPORTS])
def test_the_paired_table_is_the_committed_comparisons(report):
    from lladapt.evaluation.paired import pairs_markdown

    if not (report / "paired.json").is_file():
        pytest.skip(f"{report.name} has no paired comparisons")
    pairs = json.loads((report / "paired.json").read_text())["pairs"]
    assert pairs
    assert pairs_markdown(pairs) in (report / "report.md").read_text()
