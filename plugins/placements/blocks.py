"""Block placements: ``attention``, ``mlp`` and ``both``.

How an adapter goes on a block is the adapter's ``block_position``:

* ``after`` (series): one site in ``output`` mode on the block's out projection (``o`` /
  ``down``), so the adapter transforms the block's output;
* ``alongside`` (parallel): one ``parallel`` site that reads the input of the block's first input
  projection (``q`` or ``qkv`` / ``gate`` or ``up``) and adds to the output of its out projection;
* ``projections`` (LoRA): every projection of the block, each in the adapter's default mode.

Roles come from the backbone's layout, never from module names.
"""

from __future__ import annotations

from typing import ClassVar

from lladapt import Adapter, Layout, PlacementError, Site
from lladapt.plugins.placements.layers import LayerPlacement

__all__ = ["AttentionPlacement", "BlockPlacement", "BothPlacement", "MlpPlacement", "block_sites"]


def _block_roles(layout: Layout, block: str) -> tuple[tuple[str, ...], str]:
    spec = layout.layer
    return (spec.attention_in, spec.attention_out) if block == "attention" else (
        spec.mlp_in, spec.mlp_out
    )


def block_sites(layout: Layout, adapter: Adapter, layer: int, block: str) -> list[Site]:
    """The sites of ``adapter`` on one block (``attention`` or ``mlp``) of one layer."""
    in_roles, out_role = _block_roles(layout, block)
    position = getattr(adapter, "block_position", "projections")
    out_path = layout.module_path(layer, out_role)
    if position == "after":
        return [Site(path=out_path, layer=layer, role=out_role, mode="output")]
    if position == "alongside":
        if not in_roles:
            raise PlacementError(f"the backbone's layout lists no input projection of the {block}")
        return [
            Site(
                path=out_path,
                layer=layer,
                role=out_role,
                mode="parallel",
                source=layout.module_path(layer, in_roles[0]),
            )
        ]
    if position != "projections":
        raise PlacementError(
            f"adapter '{adapter.name}' has block_position '{position}'; expected after, "
            "alongside or projections"
        )
    sites: dict[str, Site] = {}
    for role in (*in_roles, out_role):
        path = layout.module_path(layer, role)
        sites.setdefault(
            path, Site(path=path, layer=layer, role=role, mode=adapter.default_mode(role))  # type: ignore[arg-type]
        )
    return list(sites.values())


class BlockPlacement(LayerPlacement):
    """Base of the block placements: the blocks of each selected layer."""

    blocks: ClassVar[tuple[str, ...]] = ()

    def resolve(self, layout: Layout, adapter: Adapter) -> list[Site]:
        self.check_module_adapter(adapter)
        return [
            site
            for layer in self.layer_indices(layout)
            for block in self.blocks
            for site in block_sites(layout, adapter, layer, block)
        ]


class AttentionPlacement(BlockPlacement):
    """The attention block of each selected layer (series: after it; parallel: beside it; LoRA:
    its q, k, v (or fused qkv) and o projections)."""

    name: ClassVar[str] = "attention"
    blocks = ("attention",)


class MlpPlacement(BlockPlacement):
    """The MLP block of each selected layer (series: after it; parallel: beside it; LoRA: its
    gate, up and down projections)."""

    name: ClassVar[str] = "mlp"
    aliases: ClassVar[tuple[str, ...]] = ("ffn",)
    blocks = ("mlp",)


class BothPlacement(BlockPlacement):
    """The attention and the MLP block of each selected layer."""

    name: ClassVar[str] = "both"
    blocks = ("attention", "mlp")
