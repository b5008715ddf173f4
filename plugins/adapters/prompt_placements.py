"""The placements of the prompt-learning adapters: they go to whole layers or to the input
embeddings, not to Linear modules, so the module placements (attention, mlp, ...) do not fit.

* ``all_layers``: one layer site per decoder layer (prefix tuning). There is deliberately no
  layer selection: a prefix lives in the KV cache and transformers builds ONE attention mask for
  all layers, so a layer without a prefix cannot mask out the prefix positions the others have.
* ``embeddings``: one model site, the token embeddings (prompt tuning, P-tuning).
"""

from __future__ import annotations

from typing import Any, ClassVar

from lladapt import Layout, Placement, PlacementError, Site

__all__ = ["AllLayersPlacement", "EmbeddingsPlacement"]


def _require_kind(placement: Placement, adapter: Any, kind: str) -> None:
    if adapter.site_kind != kind:
        default = dict(adapter.default_placement).get("name", "?")
        raise PlacementError(
            f"placement '{placement.name}' gives {kind} sites; adapter '{adapter.name}' goes to "
            f"{adapter.site_kind} sites: use its placement '{default}'"
        )


class AllLayersPlacement(Placement):
    """Every decoder layer (prefix tuning puts key/value prefixes in each)."""

    name: ClassVar[str] = "all_layers"

    def resolve(self, layout: Layout, adapter: Any) -> list[Site]:
        _require_kind(self, adapter, "layer")
        return [
            Site(path=layout.layer_path(i), layer=i, kind="layer") for i in range(layout.num_layers)
        ]


class EmbeddingsPlacement(Placement):
    """The input token embeddings (prompt tuning and P-tuning prepend virtual tokens there)."""

    name: ClassVar[str] = "embeddings"

    def resolve(self, layout: Layout, adapter: Any) -> list[Site]:
        _require_kind(self, adapter, "model")
        return [Site(path=layout.embeddings, kind="model")]
