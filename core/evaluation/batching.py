"""Batches of items of similar length (longest first, so that running out of memory happens on
the first batch, as lm-evaluation-harness does). Callers key results by item index, so the
original order is restored whatever the batch order."""

from __future__ import annotations

from collections.abc import Sequence


def length_sorted_batches(
    indices: Sequence[int], lengths: Sequence[int], batch_size: int, *, sort: bool = True
) -> list[list[int]]:
    """``indices`` cut into batches of ``batch_size``; with ``sort``, by ``lengths[i]``
    descending (ties keep their order), so that each batch needs little padding."""
    order = sorted(indices, key=lambda i: -lengths[i]) if sort else list(indices)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
