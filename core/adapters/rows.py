"""Several adapters over one base model, each applied to its own rows of a batch.

A server that holds adapters A and B over one base can answer a request for A and one for B in the
same forward pass of the base: each adapter adds its contribution only to the rows that asked for
it. :class:`RowSelection` says, for the next forward, which slot (adapter) each row belongs to; a
:class:`RowGate` is one adapter's view of it (its rows).

The adapter contract (optional, looked up with ``getattr`` like ``merge`` and ``detach``;
:mod:`lladapt.adapters.model`):

``share(gate: RowGate) -> None``
    Limit the adapter's contribution to the rows ``gate()`` names, and move its modules out of
    the base model's modules (into holders of its own, which its hooks read), so that another
    adapter of the same kind can attach at the same sites. The hooks stay on the base model.
    Built-ins: LoRA, series and parallel (one generic gate around each branch's delta in
    ``lladapt.plugins.adapters.linear_hooks``). Adapters without it (prefix and prompt tuning,
    which rewrite the forward's arguments instead of adding to a module's output) cannot share a
    forward pass with other adapters; a server gives each of them a model of its own.

What ``gate()`` returns: ``None`` when every row is the adapter's (or no selection is set: the
model is used as usual), else the indices of its rows (possibly empty). Gating adds the delta of
the selected rows only, computed on those rows only, so a row's values are those of that row
served alone with its adapter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["BASE_SLOT", "RowGate", "RowSelection"]

#: the slot of rows that use no adapter (the base model alone).
BASE_SLOT = -1


class RowSelection:
    """The slot of each row of the next forward; set before each forward by whoever batches."""

    def __init__(self) -> None:
        self._slots: torch.Tensor | None = None
        self._rows: dict[int, torch.Tensor | None] = {}

    def set(self, slots: torch.Tensor | None) -> None:
        """Rows of the next forwards belong to ``slots[i]`` (a 1-D long tensor); None: every
        adapter applies to every row (the model used outside a server)."""
        self._slots = slots
        self._rows = {}

    def rows(self, slot: int) -> torch.Tensor | None:
        """The rows of ``slot``: None for every row, else an index tensor (computed once per
        :meth:`set`, then shared by every hooked module of the forward)."""
        if self._slots is None:
            return None
        if slot not in self._rows:
            mine = self._slots == slot
            self._rows[slot] = None if bool(mine.all()) else mine.nonzero().squeeze(-1)
        return self._rows[slot]

    def gate(self, slot: int) -> RowGate:
        return RowGate(self, slot)


class RowGate:
    """One adapter's rows of a :class:`RowSelection`; calling it gives :meth:`RowSelection.rows`."""

    def __init__(self, selection: RowSelection, slot: int):
        self.selection = selection
        self.slot = slot

    def __call__(self) -> torch.Tensor | None:
        return self.selection.rows(self.slot)
