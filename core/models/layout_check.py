"""Checking that a backbone's :class:`~lladapt.components.interfaces.Layout` describes the model it was
given: run on every load, so that a wrong ``model.backbone`` or a plugin bug is an error naming
the module instead of adapters of the wrong width later."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lladapt.common.errors import ModelLoadError
from lladapt.components.interfaces import Layout

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["verify_layout"]


def _module_at(model: torch.nn.Module, path: str) -> torch.nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _expected_features(layout: Layout, role: str) -> tuple[int, int]:
    """(in, out) features of a role's Linear implied by the layout's sizes."""
    hidden, ffn = layout.hidden_size, layout.intermediate_size
    q_width = layout.num_attention_heads * layout.head_dim
    kv_width = layout.num_key_value_heads * layout.head_dim
    return {
        "q": (hidden, q_width),
        "k": (hidden, kv_width),
        "v": (hidden, kv_width),
        "qkv": (hidden, q_width + 2 * kv_width),
        "o": (q_width, hidden),
        "gate": (hidden, ffn),
        "up": (hidden, ffn),
        "down": (ffn, hidden),
    }[role]


def verify_layout(model: torch.nn.Module, layout: Layout, backbone: str = "backbone") -> None:
    """Check that ``layout`` describes ``model``: the layer list has ``num_layers`` layers and every
    role of every layer is a Linear (quantized Linears included) of the width the layout's sizes
    imply. A mismatch (a wrong ``model.backbone``, a plugin bug) is a :class:`ModelLoadError`
    naming the module, instead of adapters of the wrong width later."""
    import torch

    layers = _module_at(model, layout.layers)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ModelLoadError(
            f"backbone '{backbone}': the model has no decoder layer list at '{layout.layers}'"
        )
    if len(layers) != layout.num_layers:
        raise ModelLoadError(
            f"backbone '{backbone}': '{layout.layers}' holds {len(layers)} layers, the layout "
            f"says {layout.num_layers}"
        )
    for block in filter(None, (layout.layer.attention, layout.layer.mlp)):
        if _module_at(layers[0], block) is None:
            raise ModelLoadError(
                f"backbone '{backbone}': no module '{layout.layer_path(0)}.{block}'"
            )
    for index in range(layout.num_layers):
        for role in layout.layer.roles:
            path = layout.module_path(index, role)
            module = _module_at(model, path)
            if not isinstance(module, torch.nn.Linear):
                found = type(module).__name__ if module is not None else "nothing"
                raise ModelLoadError(
                    f"backbone '{backbone}': role '{role}' should be a Linear at '{path}', "
                    f"found {found}"
                )
            expected = _expected_features(layout, role)
            if (module.in_features, module.out_features) != expected:
                raise ModelLoadError(
                    f"backbone '{backbone}': role '{role}' at '{path}' is "
                    f"{module.in_features}->{module.out_features}, the layout implies "
                    f"{expected[0]}->{expected[1]}"
                )
    if layout.embeddings and _module_at(model, layout.embeddings) is None:
        raise ModelLoadError(f"backbone '{backbone}': no embeddings at '{layout.embeddings}'")
