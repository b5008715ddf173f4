"""``lladapt report``: one table over run folders like the paper's (rows: model and adapter;
columns: datasets, then the average; trainable parameters; unparsed answers) as Markdown and CSV,
and PNG charts: accuracy per dataset per run, training and validation loss per step.

Reads each run's ``results.json`` and ``metrics.jsonl`` (or the older ``train_log.jsonl``);
charts need matplotlib (the ``report`` extra). Where the run folders hold their predictions
(``eval/*.jsonl``), every pair of runs is also compared item by item
(:mod:`lladapt.evaluation.paired`): a table in ``report.md`` and each comparison in full in
``paired.json``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lladapt.common.errors import LladaptError

METRICS_FILES = ("metrics.jsonl", "train_log.jsonl")
MATPLOTLIB_MISSING = (
    "lladapt report draws its charts with matplotlib, which is not installed: "
    "pip install 'lladapt[report]' (or pass --no-charts for the tables only)"
)


@dataclass
class RunSummary:
    """What the report shows of one run folder."""

    name: str
    model: str
    adapter: str
    trainable: int | None
    #: entry label -> (accuracy, unparsed, total)
    scores: dict[str, tuple[float, int, int]]
    notes: list[str] = field(default_factory=list)
    #: (step, loss) and (step, val_loss) points
    loss: list[tuple[int, float]] = field(default_factory=list)
    val_loss: list[tuple[int, float]] = field(default_factory=list)
    #: the training summary's steps, seconds and final loss (None: no training)
    train: dict[str, Any] | None = None
    #: seconds of evaluation, all entries
    eval_seconds: float | None = None

    @property
    def average(self) -> float | None:
        return sum(a for a, _, _ in self.scores.values()) / len(self.scores) if self.scores else None


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LladaptError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_text(path))
    except FileNotFoundError:
        raise LladaptError(f"'{path.parent}' is not a run folder: it has no {path.name}") from None
    except json.JSONDecodeError as exc:
        raise LladaptError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def _number(value: Any, where: str, default: float | None = None) -> float | None:
    """``value`` as a float (``default`` when absent); anything else names ``where``."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LladaptError(f"{where}: expected a number, got {json.dumps(value)[:40]}")
    return float(value)


def _count(value: Any, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise LladaptError(f"{where}: expected a whole number, got {json.dumps(value)[:40]}")
    return value


def _metrics(run: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    path = next((run / n for n in METRICS_FILES if (run / n).is_file()), None)
    loss: list[tuple[int, float]] = []
    val: list[tuple[int, float]] = []
    if path is None:
        return loss, val
    for number, line in enumerate(_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise LladaptError(f"{path}, line {number}: not JSON") from None
        step = record.get("step") if isinstance(record, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            continue  # not a step's record
        for key, points in (("loss", loss), ("val_loss", val)):
            if isinstance(record.get(key), (int, float)) and not isinstance(record[key], bool):
                points.append((step, float(record[key])))
    return loss, val


def _entry(entry: Any, where: str) -> tuple[str, tuple[float, int, int], list[str]]:
    """One evaluation entry of results.json: its label, (accuracy, unparsed, total), notes."""
    if not isinstance(entry, dict) or not isinstance(entry.get("label") or entry.get("dataset"), str):
        raise LladaptError(f"{where}: not an evaluation result (needs a 'label' or 'dataset' name)")
    label = entry.get("label") or entry["dataset"]
    accuracy = _number(entry.get("accuracy"), f"{where}.accuracy")
    if accuracy is None:
        raise LladaptError(f"{where}: no 'accuracy'")
    notes = []
    if entry.get("stop"):
        notes.append(f"{label}: stop strings {entry['stop']}")
    if entry.get("protocol", "fast") != "fast":
        notes.append(f"{label}: protocol {entry['protocol']}")
    if entry.get("scoring", "generate") != "generate":
        notes.append(f"{label}: scoring {entry['scoring']}")
    return label, (accuracy, _count(entry.get("unparsed"), f"{where}.unparsed"),
                   _count(entry.get("total"), f"{where}.total")), notes


def read_run(run: Path, name: str | None = None) -> RunSummary:
    """What the report shows of the run folder ``run``, called ``name`` (default: the folder's
    name). A results.json the report cannot read is an error naming the field."""
    path = Path(run) / "results.json"
    results = _read_json(path)
    if not isinstance(results, dict) or not isinstance(results.get("eval") or [], list):
        raise LladaptError(f"{run}/results.json: not a results file (no 'eval' list)")
    adapter = results.get("adapter") or {}
    if not isinstance(adapter, dict):
        raise LladaptError(f"{path}: adapter: expected an object or null")
    trainable = adapter.get("trainable_parameters")
    scores, notes, eval_seconds = {}, [], 0.0
    for i, item in enumerate(results.get("eval") or []):
        label, scores[label], entry_notes = _entry(item, f"{path}: eval[{i}]")
        notes += entry_notes
        eval_seconds += _number(item.get("seconds"), f"{path}: eval[{i}].seconds", 0.0) or 0.0
    train = results.get("train") if isinstance(results.get("train"), dict) else None
    if train is not None:
        train = {**train, **{key: _number(train.get(key), f"{path}: train.{key}")
                             for key in ("seconds", "final_loss")}}
    loss, val = _metrics(Path(run))
    model = str(results.get("model") or "?")
    return RunSummary(
        name=name or Path(run).resolve().name, model=Path(model).name if "/" in model else model,
        adapter=str(adapter.get("name") or "-"),
        trainable=_count(trainable, f"{path}: adapter.trainable_parameters") if trainable is not None else None,
        scores=scores, notes=notes, loss=loss, val_loss=val, train=train, eval_seconds=eval_seconds or None,
    )


def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """What the report calls each run: its folder's name, or as many of its last path parts as
    tell it apart from the other runs' (``local/lora`` and ``onray/lora``)."""
    parts = [Path(d).resolve().parts for d in run_dirs]
    depth = [1] * len(parts)
    while True:
        labels = ["/".join(p[-k:]) for p, k in zip(parts, depth, strict=True)]
        folders: dict[str, set[tuple[str, ...]]] = {}
        for label, folder in zip(labels, parts, strict=True):
            folders.setdefault(label, set()).add(folder)
        deeper = [i for i, label in enumerate(labels) if len(folders[label]) > 1]
        if not deeper:  # every label names one folder (given once, or twice)
            return labels
        for i in deeper:
            depth[i] += 1


def columns(runs: Sequence[RunSummary]) -> list[str]:
    """Entry labels in first-seen order over the runs."""
    out: list[str] = []
    for run in runs:
        out += [label for label in run.scores if label not in out]
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def table_rows(runs: Sequence[RunSummary]) -> tuple[list[str], list[list[str]]]:
    labels = columns(runs)
    header = ["run", "model", "adapter", "trainable params", *labels, "Avg", "unparsed"]
    rows = []
    for run in runs:
        cells = [_pct(run.scores[label][0]) if label in run.scores else "-" for label in labels]
        unparsed = sum(u for _, u, _ in run.scores.values())
        total = sum(t for _, _, t in run.scores.values())
        rows.append([run.name, run.model, run.adapter,
                     f"{run.trainable:,}" if run.trainable is not None else "-",
                     *cells, _pct(run.average), f"{unparsed}/{total}"])
    return header, rows


def markdown(runs: Sequence[RunSummary], paired: Sequence[dict[str, Any]] = (),
             paired_notes: Sequence[str] = (), names: Mapping[str, str] | None = None) -> str:
    """The accuracy table, the cost table, the paired comparisons (when there are any; ``names``:
    run folder -> its name in the tables) and the notes."""
    from lladapt.evaluation.paired import pairs_markdown

    header, rows = table_rows(runs)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(
        "---" if i < 3 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    text = "Accuracy (%) per evaluation entry; Avg is their mean; unparsed = answers the parser " \
           "could not read / items.\n\n" + "\n".join(lines) + "\n"
    text += "\n" + cost_table(runs)
    if paired:
        text += ("\nPaired comparisons (`lladapt compare`) over the items both runs answered, "
                 "all entries pooled: the items only one run got right and the exact McNemar "
                 "p-value; in full in paired.json.\n\n" + pairs_markdown(paired, names))
    notes = [f"- {run.name}: {note}" for run in runs for note in run.notes]
    notes += [f"- {note}" for note in paired_notes]
    if notes:
        text += "\nNotes:\n\n" + "\n".join(notes) + "\n"
    return text


def _cost_cells(run: RunSummary) -> list[str]:
    train = run.train or {}
    seconds, loss = train.get("seconds"), train.get("final_loss")
    return [str(train.get("steps", "-")), f"{seconds:.0f}" if seconds is not None else "-",
            f"{loss:.4f}" if loss is not None else "-",
            f"{run.eval_seconds:.0f}" if run.eval_seconds is not None else "-"]


def cost_table(runs: Sequence[RunSummary]) -> str:
    """Training steps, seconds and final loss, and evaluation seconds, per run (Markdown)."""
    lines = ["| run | train steps | train s | final loss | eval s |", "|---|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join([run.name, *_cost_cells(run)]) + " |" for run in runs]
    return "\n".join(lines) + "\n"


def csv_text(runs: Sequence[RunSummary]) -> str:
    labels = columns(runs)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["run", "model", "adapter", "trainable_parameters", *labels, "average",
                     *[f"{label} unparsed" for label in labels],
                     "train_steps", "train_seconds", "final_loss", "eval_seconds"])
    for run in runs:
        writer.writerow([
            run.name, run.model, run.adapter, run.trainable if run.trainable is not None else "",
            *[f"{run.scores[label][0]:.6f}" if label in run.scores else "" for label in labels],
            f"{run.average:.6f}" if run.average is not None else "",
            *[run.scores[label][1] if label in run.scores else "" for label in labels],
            *[cell if cell != "-" else "" for cell in _cost_cells(run)],
        ])
    return buffer.getvalue()


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure  # the Agg canvas: no display, no pyplot state
    except ImportError:
        raise LladaptError(MATPLOTLIB_MISSING) from None
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def accuracy_chart(runs: Sequence[RunSummary], path: Path) -> None:
    """Grouped bars: one group per dataset entry (and the average), one bar per run."""
    labels = [*columns(runs), "Avg"]
    fig = _figure(min(14.0, max(6.0, 1.2 * len(labels) * max(1, len(runs)) / 2 + 2)), 4.5)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(runs))
    for k, run in enumerate(runs):
        # an entry a run did not evaluate gets no bar (not a bar at 0).
        values = [100 * run.scores[label][0] if label in run.scores else None for label in labels[:-1]]
        values.append(100 * run.average if run.average is not None else None)
        xs = [i + (k - (len(runs) - 1) / 2) * width for i in range(len(labels))]
        shown = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
        bars = ax.bar([x for x, _ in shown], [v for _, v in shown], width,
                      label=f"{run.name} ({run.model}, {run.adapter})", color=f"C{k}")
        ax.bar_label(bars, labels=[f"{v:.1f}" for _, v in shown], fontsize=8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Accuracy per dataset")
    ax.legend(fontsize=8)
    _save(fig, path)


def loss_chart(runs: Sequence[RunSummary], path: Path) -> bool:
    """Training loss (lines) and validation loss (dashed, markers) per step; False when no run
    has any."""
    if not any(run.loss or run.val_loss for run in runs):
        return False
    fig = _figure(7.0, 4.5)
    ax = fig.add_subplot()
    for k, run in enumerate(runs):
        color = f"C{k}"
        if run.loss:
            ax.plot(*zip(*run.loss, strict=True), color=color, label=f"{run.name} train")
        if run.val_loss:
            ax.plot(*zip(*run.val_loss, strict=True), color=color, linestyle="--", marker="o",
                    label=f"{run.name} validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("Training and validation loss")
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def _save(fig: Any, path: Path) -> None:
    """The chart as PNG, rendered in memory and written atomically (a full disk leaves no
    truncated image)."""
    from lladapt.common.fileio import write_bytes_atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())


def _paired(run_dirs: Sequence[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every pair of runs compared item by item; no notes when no run has predictions."""
    from lladapt.evaluation.paired import compare_all

    if not any((Path(d) / "eval").is_dir() for d in run_dirs):
        return [], []
    return compare_all([Path(d) for d in run_dirs])


def write_report(run_dirs: Sequence[Path], out: Path, *, charts: bool = True) -> list[Path]:
    """Write ``report.md``, ``report.csv``, ``paired.json`` (when two runs or more have
    predictions to compare) and (with ``charts``) ``accuracy.png`` and ``loss.png`` into
    ``out``; returns the files written. Every run folder is read (and matplotlib found) before
    anything is written."""
    if not run_dirs:
        raise LladaptError("give at least one run folder")
    labels = run_labels(run_dirs)
    runs = [read_run(Path(d), label) for d, label in zip(run_dirs, labels, strict=True)]
    paired, paired_notes = _paired(run_dirs)
    if charts:
        _figure(1, 1)  # fail now, not after the tables, when matplotlib is missing
    from lladapt.common.fileio import make_dirs, write_json_atomic, write_text_atomic, writing

    make_dirs(out)
    written = [out / "report.md", out / "report.csv"]
    names = {str(Path(d)): label for d, label in zip(run_dirs, labels, strict=True)}
    write_text_atomic(written[0], markdown(runs, paired, paired_notes, names))
    write_text_atomic(written[1], csv_text(runs))
    if paired:
        written.append(out / "paired.json")
        write_json_atomic(written[-1], {"pairs": paired})
    elif (out / "paired.json").is_file():
        with writing(out / "paired.json"):
            (out / "paired.json").unlink()  # from an earlier report: it would no longer match
    if charts:
        accuracy_chart(runs, out / "accuracy.png")
        written.append(out / "accuracy.png")
        if loss_chart(runs, out / "loss.png"):
            written.append(out / "loss.png")
    return written
