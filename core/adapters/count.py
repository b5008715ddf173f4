"""The one parameter counter, :func:`count_module_parameters`: used by
:class:`~lladapt.adapters.model.AdaptedModel`, a run's results and ``lladapt params``
(:func:`lladapt.adapters.meta_check.count_parameters`, which counts a run config's model and
adapter without loading weights)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lladapt.models.quantization import unpacked_numel

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["count_module_parameters"]


def count_module_parameters(module: torch.nn.Module, *, trainable_only: bool = False) -> int:
    """Parameters of ``module``: each shared (tied) tensor once, since ``Module.parameters()``
    skips a tensor it has seen; packed 4-bit weights counted unpacked; with ``trainable_only``
    only those that require grad."""
    return sum(unpacked_numel(p) for p in module.parameters() if p.requires_grad or not trainable_only)
