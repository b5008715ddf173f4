"""Layer selection, shared by every placement: ``all``, a list of indices, a range ``"0-15"`` or
``{start, end}`` (both ends included)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, NonNegativeInt, field_validator, model_validator

from lladapt import ComponentConfig, Layout, Placement, PlacementError

__all__ = ["LayerPlacement", "LayerRange", "LayersConfig", "select_layers"]

_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


class LayerRange(ComponentConfig):
    """Layers ``start`` to ``end``, both included."""

    start: NonNegativeInt
    end: NonNegativeInt

    @model_validator(mode="after")
    def _ordered(self) -> LayerRange:
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        return self


LayerSpec = Literal["all"] | list[int] | LayerRange


class LayersConfig(ComponentConfig):
    """The ``layers`` field of every placement."""

    #: which decoder layers: ``all``, a list (``[0, 1, -1]``; negative counts from the end), a
    #: range ``"0-15"`` or ``{start: 0, end: 15}`` (both ends included).
    layers: LayerSpec = Field(default="all", union_mode="left_to_right")

    @field_validator("layers", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return value  # let pydantic reject it
        if isinstance(value, int):
            return [value]
        if isinstance(value, str) and value != "all":
            match = _RANGE.match(value)
            if match:
                return {"start": int(match[1]), "end": int(match[2])}
            if value.strip().lstrip("-").isdigit():
                return [int(value)]
            raise ValueError(f"expected 'all', a list of layer indices or a range like '0-15', got '{value}'")
        return value


def select_layers(spec: LayerSpec, num_layers: int, where: str = "placement.layers") -> list[int]:
    """The selected layer indices, sorted, each once; a PlacementError names any out of range."""
    if spec == "all":
        return list(range(num_layers))
    if isinstance(spec, LayerRange):
        if spec.end >= num_layers:
            raise PlacementError(
                f"{where}: range {spec.start}-{spec.end} goes past the last layer; "
                f"the model has {num_layers} layers (0-{num_layers - 1})"
            )
        return list(range(spec.start, spec.end + 1))
    bad = [i for i in spec if not -num_layers <= i < num_layers]
    if bad:
        raise PlacementError(
            f"{where}: no layer {', '.join(map(str, bad))}; the model has {num_layers} layers "
            f"(0-{num_layers - 1}, or -{num_layers}..-1 from the end)"
        )
    if not spec:
        raise PlacementError(f"{where}: the list of layers is empty")
    return sorted({i % num_layers for i in spec})


class LayerPlacement(Placement):
    """Base of the built-in placements: a layer selection, and the check that the adapter goes on
    modules (prefix and prompt tuning bring their own placements)."""

    Config = LayersConfig

    def layer_indices(self, layout: Layout) -> list[int]:
        return select_layers(self.config.layers, layout.num_layers)

    def check_module_adapter(self, adapter: Any) -> None:
        if adapter.site_kind != "module":
            default = dict(adapter.default_placement).get("name", "?")
            raise PlacementError(
                f"placement '{self.name}' puts adapters on Linear modules; adapter "
                f"'{adapter.name}' goes to {adapter.site_kind} sites: use its placement '{default}'"
            )
