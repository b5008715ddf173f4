"""Worker threads that generate: one lane per model instance, each with its own queue.

* :class:`SharedLane`: the base model with every adapter that can share it (LoRA, series,
  parallel: gated per row, :mod:`lladapt.adapters.rows`), served by continuous batching
  (:class:`lladapt.evaluation.continuous.ContinuousBatcher`): requests for the base and for any
  of these adapters join the running batch and share its forward passes. Beam search runs
  between two steps as a static batch of one adapter.
* :class:`OwnLane`: one adapter that cannot share the base (prefix and prompt tuning rewrite the
  forward's arguments), on a model instance of its own that shares the base's weights: static
  batches of its requests through ``generate``, a new batch as soon as the last one finished.

Lanes run side by side (PyTorch releases the GIL while it computes), so a request for a prefix
adapter never waits for the shared batch, nor the other way round.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lladapt.evaluation.continuous import ContinuousBatcher, Row

if TYPE_CHECKING:  # pragma: no cover
    from lladapt.adapters.rows import RowSelection

__all__ = ["Job", "Lane", "OwnLane", "SharedLane"]


@dataclass(eq=False)
class Job:
    """A row and what only ``generate`` does with it (beams)."""

    row: Row
    num_beams: int = 1

    @property
    def key(self) -> tuple[Any, ...]:
        """Rows that can be one static batch have equal keys."""
        row = self.row
        return (row.slot, row.sampling, row.max_new_tokens, self.num_beams)


def take_group(jobs: deque[Job], limit: int) -> list[Job]:
    """The first job and those after it with the same key (up to ``limit``); the rest stay."""
    key = jobs[0].key
    group = [job for job in jobs if job.key == key][:limit]
    for job in group:
        jobs.remove(job)
    return group


class Lane:
    """A daemon thread that works while it has jobs; :meth:`close` finishes them first."""

    def __init__(self, name: str, tokenizer: Any, *, pad_id: int = 0, max_rows: int = 32):
        self.name = name
        self.tokenizer = tokenizer
        self.pad_id = pad_id
        self.max_rows = max_rows
        self._static: deque[Job] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name=f"lladapt-serve-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._lock:
            self._queue(job)
        self._wake.set()

    def _queue(self, job: Job) -> None:
        self._static.append(job)

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work once every job submitted has finished."""
        self._closing = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def busy(self) -> bool:
        return bool(self._static)

    def _loop(self) -> None:
        while True:
            if not self.busy:
                if self._closing:
                    return
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            self._work()

    def _work(self) -> None:
        raise NotImplementedError

    def _static_batch(self, model: Any, before: Any = None) -> None:
        """One static batch from the queue through ``generate``."""
        from lladapt.serving.static_batch import generate_rows

        with self._lock:
            group = take_group(self._static, self.max_rows)
        rows = [job.row for job in group]
        try:
            if before is not None:
                before(rows)
            generate_rows(model, self.tokenizer, rows, group[0].num_beams, self.pad_id)
        except Exception as error:  # noqa: BLE001 - handed to each request
            for row in rows:
                row.finish("error", error)


class SharedLane(Lane):
    """The base model and the adapters gated on it: continuous batching."""

    def __init__(self, model: Any, tokenizer: Any, selection: RowSelection, **kwargs: Any):
        super().__init__("shared", tokenizer, **kwargs)
        self.model = model
        self.selection = selection
        self.batcher = ContinuousBatcher(model, max_rows=self.max_rows, pad_id=self.pad_id,
                                         select_rows=selection.set)

    def _queue(self, job: Job) -> None:
        if job.num_beams == 1:
            self.batcher.submit(job.row)
        else:
            self._static.append(job)

    @property
    def busy(self) -> bool:
        return bool(self._static) or self.batcher.busy

    def _work(self) -> None:
        if self._static:
            self._static_batch(self.model, before=self._one_slot)
        if self.batcher.busy:
            self.batcher.step()

    def _one_slot(self, rows: list[Row]) -> None:
        import torch

        # every row of the batch (beams included) is this slot's
        self.selection.set(torch.tensor([rows[0].slot]))


class OwnLane(Lane):
    """One adapter on a model instance of its own: static batches through ``generate``."""

    def __init__(self, name: str, model: Any, tokenizer: Any, **kwargs: Any):
        super().__init__(name, tokenizer, **kwargs)
        self.model = model

    def _work(self) -> None:
        self._static_batch(self.model)
