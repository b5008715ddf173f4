"""What a person sees while training: a rich progress bar on a terminal, one plain line per
logging step otherwise (CI, log files). The JSON record of each logging step goes to
``metrics.jsonl`` only."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lladapt.common.errors import LladaptError
from lladapt.common.fileio import append_text, make_dirs, write_text_atomic

Echo = Callable[[str], None]


def plain_line(record: dict[str, Any], total: int) -> str:
    parts = [f"step {record['step']}/{total}"]
    if "loss" in record:
        parts.append(f"loss {record['loss']:.4f}")
    if "lr" in record:
        parts.append(f"lr {record['lr']:.2e}")
    if "tokens_per_second" in record:
        parts.append(f"{record['tokens_per_second']:.0f} tok/s")
    if "padded_share" in record:
        parts.append(f"padding {100 * record['padded_share']:.1f}%")
    if "val_loss" in record:
        parts.append(f"val_loss {record['val_loss']:.4f}")
    return "  ".join(parts)


class Progress:
    """``mode``: ``bar``, ``plain``, ``none`` or ``auto`` (bar when stderr is a terminal)."""

    def __init__(self, mode: str, total: int, *, echo: Echo, metrics: Path | None) -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "plain"
        self.mode, self.total, self.echo, self.metrics = mode, total, echo, metrics
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(), console=Console(stderr=True), transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("train", total=self.total, info="")
        if self.metrics is not None:
            make_dirs(self.metrics.parent)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def advance(self, step: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step)

    def log(self, record: dict[str, Any]) -> None:
        """One logging step: append to metrics.jsonl, show on screen."""
        if self.metrics is not None:
            append_text(self.metrics, json.dumps(record) + "\n")
        line = plain_line(record, self.total)
        if self._bar is not None:
            self._bar.update(self._task, completed=record["step"], info=line.split("  ", 1)[-1])
        elif self.mode == "plain":
            self.echo(line)


def read_metrics(path: Path) -> list[tuple[int, str]]:
    """``(step, line)`` of each record of ``metrics.jsonl``, less a last record cut short by a kill.
    A line that is not a step's record is an error naming it (checked before a resume writes)."""
    if not path.is_file():
        return []
    lines = path.read_bytes().splitlines(keepends=True)
    if lines and not lines[-1].endswith(b"\n"):
        lines.pop()  # cut short by a kill: that step is logged again
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            step = json.loads(line).get("step")
        except (ValueError, AttributeError):  # not JSON, not UTF-8, not an object
            step = None
        if not isinstance(step, int) or isinstance(step, bool):
            raise LladaptError(f"{path}, line {number}: not a training step's record; remove that line "
                               "(or the file: it is the log, not the checkpoint) and resume again")
        records.append((step, line.decode("utf-8").rstrip("\n")))
    return records


def trim_metrics(path: Path, last_step: int) -> None:
    """Drop the records after ``last_step`` (a resumed run logs those steps again)."""
    if path.is_file():
        kept = [line for step, line in read_metrics(path) if step <= last_step]
        write_text_atomic(path, "".join(line + "\n" for line in kept))


def _render(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table as plain text (rich), for the end of a run."""
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, box=None, show_header=any(headers), pad_edge=False)
    for row in rows:
        table.add_row(*row)
    buffer = io.StringIO()
    Console(file=buffer, width=120, no_color=True).print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip().splitlines())


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def train_summary(results: dict[str, Any], trained: Any, adapter_dir: Path) -> str:
    """Trainable parameters, steps, time, first and final loss, where the adapter went."""
    train = results["train"]
    rows = [
        ("trainable parameters", f"{results['adapter']['trainable_parameters']:,}"),
        ("steps", f"{trained.steps} ({trained.epochs:.2f} epochs)"
                  + (f", resumed from step {trained.resumed_from}" if trained.resumed_from else "")),
        ("time", f"{trained.seconds:.1f} s"),
        ("loss", f"{_loss(trained.first_loss)} -> {_loss(trained.final_loss)}"),
        ("padding", f"{100 * trained.padded_share:.1f}% of tokens"),
    ]
    if train.get("val_loss") is not None:
        rows.append(("validation loss", f"{train['val_loss']:.4f} (best at step {trained.best_step})"))
    rows.append(("adapter", str(adapter_dir)))
    return _render((), rows)


def _accuracy(summary: dict[str, Any]) -> str:
    return f"{100 * summary['accuracy']:.1f}% ({summary['correct']}/{summary['total']})"


def _entry(summary: dict[str, Any]) -> str:
    """How the table names an evaluation entry: its label (``arith-test``, ``arith-test-2``: two
    entries of one dataset and split stay apart), else ``dataset (split)``."""
    if summary.get("label"):
        return str(summary["label"])
    return summary["dataset"] + (f" ({summary['split']})" if summary.get("split") else "")


def accuracy_table(results: dict[str, Any]) -> str:
    """Each dataset's accuracy; with ``eval_before``, before and after training side by side."""
    before = {_entry(s): s for s in results.get("eval_before") or []}
    headers = ["dataset", "before training", "after training"] if before else ["dataset", "accuracy"]
    rows = []
    for summary in results["eval"]:
        key = name = _entry(summary)
        rows.append([name, _accuracy(before[key]), _accuracy(summary)] if key in before
                    else [name, _accuracy(summary)] + (["-"] if before else []))
    return _render(headers, rows)
