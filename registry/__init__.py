"""``Registry[T]``: the name -> component class table of one component kind.

Duplicate names are errors naming both classes; unknown names suggest the closest registered one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from lladapt.common.errors import PluginError, UnknownComponentError

T = TypeVar("T")

__all__ = ["Entry", "Registry", "did_you_mean"]


def did_you_mean(name: str, candidates: list[str] | tuple[str, ...] | set[str]) -> str | None:
    """The closest candidate to ``name`` (case-insensitive), or None when nothing is close."""
    lowered = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def _qualname(obj: object) -> str:
    return f"{obj.__module__}.{getattr(obj, '__qualname__', repr(obj))}"


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered component: its class and the plugin that provided it."""

    name: str
    cls: type[T]
    plugin: str


class Registry(Generic[T]):
    """Components of one kind, by ``cls.name``; ``cls.aliases`` are accepted on lookup."""

    def __init__(
        self,
        kind: str,
        *,
        describe_plugin: Callable[[str], str] | None = None,
        explain_unknown: Callable[[str], str | None] | None = None,
    ):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}
        #: plugin name -> how error messages name it (e.g. with its distribution).
        self._describe = describe_plugin or (lambda plugin: f"plugin '{plugin}'")
        #: name -> why it is missing (e.g. its plugin is disabled), added to the unknown-name error.
        self._explain_unknown = explain_unknown

    def add(self, cls: type[T], plugin: str = "<unknown>") -> type[T]:
        """Register ``cls`` under ``cls.name`` (and its ``aliases``). Returns ``cls``."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"plugin '{plugin}' registered {self.kind} class {_qualname(cls)} "
                "without a non-empty string `name` class attribute"
            )
        for key in (name, *getattr(cls, "aliases", ())):
            owner = self._entries.get(key) or self._entries.get(self._aliases.get(key, ""))
            if owner is not None:
                raise PluginError(
                    f"{self.kind} name '{key}' is registered twice: by {_qualname(owner.cls)} "
                    f"({self._describe(owner.plugin)}) and by {_qualname(cls)} "
                    f"({self._describe(plugin)})"
                )
        self._entries[name] = Entry(name, cls, plugin)
        for alias in getattr(cls, "aliases", ()):
            self._aliases[alias] = name
        return cls

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases; raises if unknown."""
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        folded = {k.lower(): k for k in (*self._entries, *self._aliases)}
        if name.lower() in folded:
            return self.canonical(folded[name.lower()])
        raise UnknownComponentError(
            self.kind,
            name,
            list(self._entries),
            did_you_mean(name, [*self._entries, *self._aliases]),
            reason=self._explain_unknown(name) if self._explain_unknown else None,
        )

    def get(self, name: str) -> type[T]:
        return self._entries[self.canonical(name)].cls

    def entry(self, name: str) -> Entry[T]:
        return self._entries[self.canonical(name)]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self._aliases)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
