"""A run config checked against its model's architecture, on the meta device (no weights, no
memory): what ``lladapt validate`` reports beyond the config's own fields, and what
``lladapt params`` counts on. Both go through :func:`attach_on_meta`, so they report the same
errors, and ``lladapt run`` meets the same ones when it attaches (the same placement and site
checks, on the real weights).

Each placement problem becomes a :class:`~lladapt.errors.ErrorItem` under the config path it
concerns: ``placement`` / ``placement.layers`` / ``placement.modules`` (sites, layers, modules,
modes), ``adapter`` (the adapter refused the sites). A model whose architecture cannot be read
(an unreachable hub id) stays a :class:`~lladapt.ModelLoadError`, for both commands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lladapt.errors import AdapterError, ConfigError, ErrorItem, PlacementError

if TYPE_CHECKING:  # pragma: no cover
    from lladapt.config import RunConfig
    from lladapt.models import LoadedModel

__all__ = ["MetaModel", "attach_on_meta", "placement_error_items"]

#: a problem line that starts with the config path it concerns (``placement.layers: ...``).
_PATHED = re.compile(r"^(placement(?:\.[A-Za-z_]\w*)*): (.*)$", re.DOTALL)


@dataclass
class MetaModel:
    """The base model on the meta device, and the same model with the adapter (if any)."""

    loaded: LoadedModel
    model: Any  # the bare base model, or lladapt.adapt.AdaptedModel


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
    from lladapt.models import load_model

    loaded = load_model(config.model, meta=True)  # a ModelLoadError stays one (exit code 1)
    loaded.model.requires_grad_(False)  # the base is always frozen
    if config.adapter is None:
        return MetaModel(loaded, loaded.model)
    from lladapt.adapt import attach_from_config

    try:
        adapted = attach_from_config(loaded.model, loaded.layout, config.adapter, config.placement)
    except PlacementError as exc:
        raise ConfigError(placement_error_items(exc), source=source) from None
    except AdapterError as exc:
        raise ConfigError([ErrorItem("adapter", str(exc))], source=source) from None
    return MetaModel(loaded, adapted)
