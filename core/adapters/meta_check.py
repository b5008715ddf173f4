"""A run config checked against its model's architecture, on the meta device (no weights, no
memory): what ``lladapt validate`` reports beyond the config's own fields, and what
``lladapt params`` counts on. Both go through :func:`attach_on_meta`, so they report the same
errors, and ``lladapt run`` meets the same ones when it attaches (the same placement and site
checks, on the real weights).

Each placement problem becomes a :class:`~lladapt.common.errors.ErrorItem` under the config path it
concerns: ``placement`` / ``placement.layers`` / ``placement.modules`` (sites, layers, modules,
modes), ``adapter`` (the adapter refused the sites). A model whose architecture cannot be read
(an unreachable hub id) stays a :class:`~lladapt.ModelLoadError`, for both commands.

:func:`count_parameters` counts there: the base model built on the meta device (from its preset,
or from the ``config.json`` of a local folder or hub id), the configured adapter attached, each
parameter counted once (tied embeddings once). With no adapter nothing is trainable: lladapt
always freezes the base. Quantization is ignored: counts are of the unquantized architecture.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lladapt.adapters.count import count_module_parameters
from lladapt.common.errors import AdapterError, ConfigError, ErrorItem, PlacementError
from lladapt.components.plugin_manager import get_registry

if TYPE_CHECKING:  # pragma: no cover
    from lladapt.config import RunConfig
    from lladapt.models.loading import LoadedModel

__all__ = ["MetaModel", "attach_on_meta", "count_parameters", "placement_error_items"]

#: a problem line that starts with the config path it concerns (``placement.layers: ...``).
_PATHED = re.compile(r"^(placement(?:\.[A-Za-z_]\w*)*): (.*)$", re.DOTALL)


@dataclass
class MetaModel:
    """The base model on the meta device, and the same model with the adapter (if any)."""

    loaded: LoadedModel
    model: Any  # the bare base model, or lladapt.adapters.model.AdaptedModel


def placement_error_items(exc: PlacementError) -> list[ErrorItem]:
    """One item per problem line of a PlacementError, under the config path it names."""
    lines = [line.strip() for line in str(exc).split("\n")]
    items = []
    for line in lines:
        if not line or line == "cannot place the adapter:":
            continue
        match = _PATHED.match(line)
        items.append(ErrorItem(match[1], match[2]) if match else ErrorItem("placement", line))
    return items


def attach_on_meta(config: RunConfig, source: str | None = None) -> MetaModel:
    """Build the model on the meta device and attach the configured adapter at its placement.

    Raises one :class:`ConfigError` (``source``: the config file, for the message) listing every
    placement problem found, or the :class:`~lladapt.ModelLoadError` of an unreadable model.
    """
    from lladapt.models.loading import load_model

    loaded = load_model(config.model, meta=True)  # a ModelLoadError stays one (exit code 1)
    loaded.model.requires_grad_(False)  # the base is always frozen
    if config.adapter is None:
        return MetaModel(loaded, loaded.model)
    from lladapt.adapters.model import attach_from_config

    try:
        adapted = attach_from_config(loaded.model, loaded.layout, config.adapter, config.placement)
    except PlacementError as exc:
        raise ConfigError(placement_error_items(exc), source=source) from None
    except AdapterError as exc:
        raise ConfigError([ErrorItem("adapter", str(exc))], source=source) from None
    return MetaModel(loaded, adapted)


def _placement_name(config: RunConfig) -> str | None:
    """The placement in effect: the configured one, else the adapter's default."""
    if config.placement is not None:
        return config.placement.name
    if config.adapter is None:
        return None
    default = get_registry("adapter").get(config.adapter.name).default_placement
    return default.get("name") if default else None


def count_parameters(config: RunConfig, source: str | None = None) -> dict[str, Any]:
    """``{model, backbone, adapter, placement, base, trainable, total, trainable_percent}``.

    ``base`` is the base model's parameter count, ``total`` base plus adapter parameters,
    ``trainable`` those with ``requires_grad`` (the adapter's). A model whose architecture cannot
    be read, or an adapter that cannot be placed, is a :class:`~lladapt.ConfigError` listing every
    problem (``source`` names the config file in it): the errors ``lladapt validate`` reports.
    """
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
