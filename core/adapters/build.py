"""Adapters and placements built from config sections: the registry gives the class, the section
its validated Config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lladapt.components.interfaces import Adapter, Placement
from lladapt.components.plugin_manager import get_registry
from lladapt.config import component_options

if TYPE_CHECKING:  # pragma: no cover
    from lladapt.config import ComponentSection

__all__ = ["build_adapter", "build_placement", "default_placement"]


def _section_name(section: Any) -> str:
    return section["name"] if isinstance(section, Mapping) else section.name


def build_adapter(section: ComponentSection | Mapping[str, Any]) -> Adapter:
    """An adapter instance from a config section (``name`` + the adapter's fields)."""
    cls = get_registry("adapter").get(_section_name(section))
    return cls(component_options(cls, section, "adapter"))


def build_placement(
    section: ComponentSection | Mapping[str, Any], where: str = "placement"
) -> Placement:
    """A placement instance from a config section or a plain ``{"name": ..., ...}`` mapping."""
    cls = get_registry("placement").get(_section_name(section))
    return cls(component_options(cls, section, where))


def default_placement(adapter: Adapter) -> Placement:
    """The placement an adapter gets when the config names none (``Adapter.default_placement``)."""
    return build_placement(
        dict(adapter.default_placement), where=f"placement (default of adapter '{adapter.name}')"
    )
