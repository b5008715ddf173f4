"""Junk values for the generators: wrong types, extreme numbers, unicode, deep and wide
structures, huge strings, and edits of a valid nested mapping at a random key."""

from __future__ import annotations

import copy
import math
from typing import Any

from hypothesis import strategies as st

#: numbers at the edges: zero, negatives, huge, tiny, not finite.
EXTREME_NUMBERS = st.sampled_from([0, -1, 1, 2**31, 2**63, 10**30, -(10**30), 1e-300, 1e308, 0.5, -0.0,
                                   math.inf, -math.inf, math.nan])
UNICODE_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
ODD_TEXT = st.sampled_from(["", " ", "\t", "\n", "null", "~", "yes", "0x1F", "1e999", "../../etc/passwd",
                            "💥", "ß", "\u202e", "a\x00b", "{{}}", "%s", "lora", "q", "test"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**20), max_value=10**20),
                    st.floats(allow_nan=True, allow_infinity=True), EXTREME_NUMBERS, UNICODE_TEXT, ODD_TEXT)


def junk(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any YAML/JSON-able value: scalars, lists and string-keyed mappings, nested."""
    return st.recursive(
        SCALARS,
        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                st.dictionaries(st.one_of(UNICODE_TEXT, ODD_TEXT), inner, max_size=4)),
        max_leaves=max_leaves,
    )


def huge_text() -> st.SearchStrategy[str]:
    return st.builds(lambda ch, n: ch * n, st.sampled_from(["x", "é", "💥", " ", "\n"]),
                     st.integers(min_value=10_000, max_value=300_000))


def paths_of(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested structure (mapping keys and list indices)."""
    out = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            out += paths_of(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out += paths_of(value, (*prefix, index))
    return out


def _parent(data: Any, path: tuple) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


@st.composite
def edited(draw: st.DrawFn, base: Any, extra_keys: list[str] = (), rounds: int = 3) -> Any:
    """``base`` with a few edits at random key paths: a value replaced by junk, a key removed, an
    unknown (or misspelled) key added, a list emptied, a value wrapped in a list."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=rounds))):
        paths = [p for p in paths_of(data) if p]
        if not paths:
            return draw(junk())
        path = draw(st.sampled_from(paths))
        parent, key = _parent(data, path), path[-1]
        action = draw(st.sampled_from(["replace", "replace", "remove", "add", "wrap", "extreme", "text"]))
        if action == "replace":
            parent[key] = draw(junk(6))
        elif action == "extreme":
            parent[key] = draw(EXTREME_NUMBERS)
        elif action == "text":
            parent[key] = draw(st.one_of(UNICODE_TEXT, ODD_TEXT))
        elif action == "remove":
            del parent[key]
        elif action == "wrap":
            parent[key] = [parent[key]]
        elif isinstance(parent, dict):
            parent[draw(st.one_of(st.sampled_from(list(extra_keys) or ["x"]), UNICODE_TEXT))] = draw(junk(4))
    return data
