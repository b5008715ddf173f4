"""Layers that read one input, computed as one product: which layers, and the outputs kept for the
layers not yet called.

Training (:mod:`lladapt.training.packed_linear`) and evaluation (:mod:`lladapt.evaluation.packing`)
both stack the weights of such layers and compute all their outputs when the first is called; the
others' outputs wait here until their layer is called with that same input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["ATTENTION_INPUT", "KeptOutputs"]

#: the layers an attention calls on one input: LLaMA's, OPT's and GPT-J's q/k/v.
ATTENTION_INPUT = ("q_proj", "k_proj", "v_proj")


class KeptOutputs:
    """The outputs one product gave for a group of layers, each handed out once to its layer when
    that layer is called with the same tensor, unchanged since (its identity and its version
    counter: a tensor changed in place gets its products computed anew; an inference tensor, made
    under ``torch.inference_mode``, has no version counter, so its identity alone). Let go of once
    all are taken."""

    def __init__(self) -> None:
        self._input: torch.Tensor | None = None
        self._version = -1
        self._outputs: list[torch.Tensor | None] = []

    def take(self, index: int, x: torch.Tensor) -> torch.Tensor | None:
        """Layer ``index``'s kept output for input ``x``; None when there is none for it."""
        if self._input is not x or self._version != _version(x) or self._outputs[index] is None:
            return None
        out, self._outputs[index] = self._outputs[index], None
        if all(o is None for o in self._outputs):
            self.clear()
        return out

    def keep(self, index: int, x: torch.Tensor, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Keep every layer's output of ``x`` but layer ``index``'s, which is returned."""
        kept: list[torch.Tensor | None] = list(outputs)
        out, kept[index] = kept[index], None
        self._input, self._version, self._outputs = x, _version(x), kept
        return out

    def clear(self) -> None:
        self._input, self._outputs = None, []


def _version(x: torch.Tensor) -> int:
    """``x``'s version counter; -1 for an inference tensor, which has none."""
    return -1 if x.is_inference() else x._version
