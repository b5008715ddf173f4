"""Comparing two nested mappings (saved settings or configs against the current ones) key by key,
so that an error can name each dotted key that differs."""

from __future__ import annotations

from typing import Any

__all__ = ["differences"]


def differences(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every leaf that differs, keys sorted; mappings
    are compared key by key (a key missing on one side reads as None), anything else as a whole."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(old) | set(new)):
            out += differences(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if old == new else [(path, old, new)]
