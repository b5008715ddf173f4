"""Counting parameters: the one counter, :func:`count_module_parameters` (used by
:class:`~lladapt.adapt.AdaptedModel`, a run's results and ``lladapt params``), and the counts of a
run config without loading weights, :func:`count_parameters` (``lladapt params``).

For a run config the base model is built on the meta device (from its preset, or from the
``config.json`` of a local folder or hub id), the configured adapter is attached there, and
parameters are counted once each (tied embeddings once). With no adapter nothing is trainable:
lladapt always freezes the base. Quantization is ignored: counts are of the unquantized
architecture."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lladapt.quantization import unpacked_numel

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from lladapt.config import RunConfig

__all__ = ["count_module_parameters", "count_parameters"]


def count_module_parameters(module: torch.nn.Module, *, trainable_only: bool = False) -> int:
    """Parameters of ``module``: each shared (tied) tensor once, since ``Module.parameters()``
    skips a tensor it has seen; packed 4-bit weights counted unpacked; with ``trainable_only``
    only those that require grad."""
    return sum(unpacked_numel(p) for p in module.parameters() if p.requires_grad or not trainable_only)


def _placement_name(config: RunConfig) -> str | None:
    """The placement in effect: the configured one, else the adapter's default."""
    if config.placement is not None:
        return config.placement.name
    if config.adapter is None:
        return None
    from lladapt import get_registry

    default = get_registry("adapter").get(config.adapter.name).default_placement
    return default.get("name") if default else None


def count_parameters(config: RunConfig, source: str | None = None) -> dict[str, Any]:
    """``{model, backbone, adapter, placement, base, trainable, total, trainable_percent}``.

    ``base`` is the base model's parameter count, ``total`` base plus adapter parameters,
    ``trainable`` those with ``requires_grad`` (the adapter's). A model whose architecture cannot
    be read, or an adapter that cannot be placed, is a :class:`~lladapt.ConfigError` listing every
    problem (``source`` names the config file in it): the errors ``lladapt validate`` reports.
    """
    from lladapt.meta_check import attach_on_meta

    meta = attach_on_meta(config, source)
    total = count_module_parameters(meta.model)
    trainable = count_module_parameters(meta.model, trainable_only=True)
    base = total - trainable  # the base is frozen; every adapter parameter trains
    return {
        "model": config.model.source,
        "backbone": meta.loaded.backbone.name,
        "adapter": config.adapter.name if config.adapter is not None else None,
        "placement": _placement_name(config),
        "base": base,
        "trainable": trainable,
        "total": total,
        "trainable_percent": 100.0 * trainable / total if total else 0.0,
    }
