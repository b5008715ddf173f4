"""Paired comparison of two runs on the same items: which differences in accuracy are more than
chance.

Two adapters evaluated on the same 805 items are not two independent samples: most items are
answered alike by both, and only the items where they disagree carry information about which is
better. The exact McNemar test uses exactly those: with ``b`` items only run A answers correctly
and ``c`` only run B does, under "equally good" each disagreement goes either way with
probability 1/2, and the two-sided p-value is ``min(1, 2 * P[Binomial(b + c, 1/2) <= min(b, c)])``.

Items are matched by evaluation entry (``eval/<label>.jsonl``) and index, and must carry the same
prompt hash in both runs (the same question asked the same way); anything else is refused, naming
the file and the item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from math import comb
from pathlib import Path
from typing import Any

from lladapt.common.errors import LladaptError
from lladapt.evaluation.store import read_lines

__all__ = ["PairedResult", "compare_all", "compare_runs", "format_p", "mcnemar_exact",
           "pairs_markdown", "read_predictions"]

Predictions = dict[str, dict[int, dict[str, Any]]]


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**n)


def format_p(value: float) -> str:
    """A p-value as the tables print it: three decimals, or two significant digits below 0.001."""
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def read_predictions(run: Path) -> Predictions:
    """``label -> index -> record`` from a run folder's ``eval/*.jsonl``, read as the evaluator
    reads them (:func:`lladapt.evaluation.store.read_lines`: a last line cut short is left out)."""
    folder = Path(run) / "eval"
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise LladaptError(f"{run}: no predictions (expected {folder}/<dataset>.jsonl, written by "
                           "`lladapt run` or `lladapt eval`)")
    found: Predictions = {}
    for path in files:
        records: dict[int, dict[str, Any]] = {}
        for number, _, record in read_lines(path):
            if not isinstance(record, dict) or not isinstance(record.get("index"), int) \
                    or not isinstance(record.get("correct"), bool):
                raise LladaptError(f"{path}, line {number}: not a prediction record (needs an "
                                   "integer 'index' and a true/false 'correct')")
            records[record["index"]] = record
        found[path.stem] = records
    return found


@dataclass(frozen=True)
class PairedResult:
    """One evaluation entry (or ``all items``: every common item pooled) compared across two runs."""

    label: str
    items: int
    correct_a: int
    correct_b: int
    only_a: int
    only_b: int
    p_value: float

    @property
    def accuracy_a(self) -> float:
        return self.correct_a / self.items if self.items else 0.0

    @property
    def accuracy_b(self) -> float:
        return self.correct_b / self.items if self.items else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy_a": round(self.accuracy_a, 6),
                "accuracy_b": round(self.accuracy_b, 6)}


def _paired(label: str, pairs: Sequence[tuple[bool, bool]]) -> PairedResult:
    only_a = sum(a and not b for a, b in pairs)
    only_b = sum(b and not a for a, b in pairs)
    return PairedResult(label, len(pairs), sum(a for a, _ in pairs), sum(b for _, b in pairs),
                        only_a, only_b, mcnemar_exact(only_a, only_b))


def compare_runs(run_a: Path, run_b: Path) -> dict[str, Any]:
    """Per evaluation entry both runs have, and pooled over all of them: items, correct answers
    of each run, the items only one run got right, and the exact McNemar p-value. Entries or
    items that only one run has are counted under ``unmatched`` and left out of the test."""
    return _compare(run_a, read_predictions(run_a), run_b, read_predictions(run_b))


def _compare(run_a: Path, preds_a: Predictions, run_b: Path, preds_b: Predictions) -> dict[str, Any]:
    results: list[PairedResult] = []
    pooled: list[tuple[bool, bool]] = []
    unmatched: dict[str, int] = {}
    for label in sorted(set(preds_a) & set(preds_b)):
        a, b = preds_a[label], preds_b[label]
        pairs = []
        for index in sorted(set(a) & set(b)):
            if a[index].get("prompt_sha") != b[index].get("prompt_sha"):
                raise LladaptError(
                    f"eval/{label}.jsonl item {index} was asked differently in {run_a} and "
                    f"{run_b} (prompt hash {a[index].get('prompt_sha')} vs "
                    f"{b[index].get('prompt_sha')}: another dataset file or template); only runs "
                    "evaluated on the same items can be compared item by item"
                )
            pairs.append((a[index]["correct"], b[index]["correct"]))
        if one_sided := set(a) ^ set(b):
            unmatched[label] = len(one_sided)
        results.append(_paired(label, pairs))
        pooled.extend(pairs)
    for label in sorted(set(preds_a) ^ set(preds_b)):
        unmatched[label] = len(preds_a.get(label) or preds_b.get(label) or {})
    if not results:
        raise LladaptError(f"{run_a} and {run_b} have no evaluation entry in common "
                           f"({', '.join(sorted(preds_a))} vs {', '.join(sorted(preds_b))})")
    return {"run_a": str(run_a), "run_b": str(run_b),
            "entries": [r.as_dict() for r in results],
            "all": _paired("all items", pooled).as_dict(), "unmatched": unmatched}


def compare_all(runs: Sequence[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """:func:`compare_runs` for every pair of ``runs`` (in the order given) that have predictions,
    each run's predictions read once. Returns the comparisons and, instead of failing, a note
    for each run without predictions and each pair that cannot be compared (no entry in common,
    items asked differently)."""
    read: list[tuple[Path, Predictions]] = []
    notes: list[str] = []
    for run in runs:
        try:
            read.append((Path(run), read_predictions(Path(run))))
        except LladaptError as exc:
            notes.append(f"{Path(run).name}: left out ({exc})")
    results = []
    for i, (run_a, preds_a) in enumerate(read):
        for run_b, preds_b in read[i + 1:]:
            try:
                results.append(_compare(run_a, preds_a, run_b, preds_b))
            except LladaptError as exc:
                notes.append(f"{run_a.name} vs {run_b.name}: not compared ({exc})")
    return results, notes


def pairs_markdown(results: Sequence[dict[str, Any]], names: Mapping[str, str] | None = None, *,
                   level: float = 0.05) -> str:
    """One row per compared pair: pooled items and accuracies, the items only one run got right,
    the pooled p-value, and the entries whose own p-value is below ``level``. ``names`` maps a
    run folder to what the row calls it (default: the folder's name)."""
    names = names or {}

    def name(run: str) -> str:
        return names.get(run, Path(run).name)

    lines = ["| A vs B | items | A % | B % | only A right | only B right | p (exact McNemar) "
             f"| entries with p < {level:g} (p) |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for result in results:
        pooled = result["all"]
        below = [f"{e['label']} ({format_p(e['p_value'])})" for e in result["entries"]
                 if e["p_value"] < level]
        lines.append(f"| {name(result['run_a'])} vs {name(result['run_b'])} | "
                     f"{pooled['items']} | {100 * pooled['accuracy_a']:.1f} | "
                     f"{100 * pooled['accuracy_b']:.1f} | {pooled['only_a']} | {pooled['only_b']} | "
                     f"{format_p(pooled['p_value'])} | {', '.join(below) or 'none'} |")
    return "\n".join(lines) + "\n"
