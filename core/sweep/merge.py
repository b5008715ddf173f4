"""A config fragment over a base config: how a sweep's axes and variants combine with its base."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["merge"]


def _nested(fragment: Mapping[str, Any]) -> dict[str, Any]:
    """``{"train.seed": 1}`` -> ``{"train": {"seed": 1}}`` (recursively)."""
    out: dict[str, Any] = {}
    for key, value in fragment.items():
        value = _nested(value) if isinstance(value, Mapping) else value
        parts = str(key).split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(node.get(parts[-1]), dict) and isinstance(value, dict):
            node[parts[-1]] = merge(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return out


def merge(base: Mapping[str, Any], fragment: Mapping[str, Any]) -> dict[str, Any]:
    """``fragment`` over ``base``: mappings merge key by key, except that a component section
    naming another component (``adapter: {name: series}`` over ``{name: lora, r: 8}``) replaces
    the old one; anything else (lists, ``None``) replaces. Neither argument is changed."""
    out = copy.deepcopy(dict(base))
    for key, value in _nested(fragment).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and value.get("name", out[key].get("name")) == out[key].get("name"):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
