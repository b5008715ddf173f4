"""Progress of an evaluation: a rich bar per dataset on a terminal (items, items/s, ETA, running
accuracy), nothing otherwise."""

from __future__ import annotations

import sys
from typing import Any, Protocol


class Progress(Protocol):
    def start(self, label: str, total: int, done: int, correct: int) -> None: ...
    def advance(self, items: int, correct: int) -> None: ...
    def stop(self) -> None: ...


class NoProgress:
    def start(self, label: str, total: int, done: int, correct: int) -> None:
        pass

    def advance(self, items: int, correct: int) -> None:
        pass

    def stop(self) -> None:
        pass


class RichProgress:
    """One bar per dataset; items already done by an earlier run count as done."""

    def __init__(self, console: Any = None):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Speed(ProgressColumn):
            def render(self, task: Any) -> Text:
                speed = task.finished_speed or task.speed
                return Text(f"{speed:.2f} items/s" if speed else "- items/s")

        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Speed(),
            TextColumn("ETA"), TimeRemainingColumn(), TextColumn("acc {task.fields[acc]}"),
            console=console or Console(stderr=True), transient=False,
        )
        self._task: Any = None
        self._done = self._correct = 0

    def start(self, label: str, total: int, done: int, correct: int) -> None:
        self._bar.start()
        self._done, self._correct = done, correct
        self._task = self._bar.add_task(label, total=total, completed=done, acc=self._acc())

    def _acc(self) -> str:
        return f"{100 * self._correct / self._done:.1f}%" if self._done else "-"

    def advance(self, items: int, correct: int) -> None:
        self._done += items
        self._correct += correct
        self._bar.update(self._task, advance=items, acc=self._acc())

    def stop(self) -> None:
        self._bar.stop()


def default_progress() -> Progress:
    """A rich bar when stderr is a terminal, else nothing."""
    return RichProgress() if sys.stderr.isatty() else NoProgress()
