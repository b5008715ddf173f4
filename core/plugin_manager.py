"""Discovers plugins (built-ins listed in code, third parties through the ``lladapt`` entry-point
group) and builds the component registries from their hooks.

A third-party plugin that fails to import, or whose hook raises, is recorded in
:func:`plugin_failures` by distribution and entry-point name; commands that do not need it go on.
``LLADAPT_DISABLE_PLUGINS`` (comma-separated plugin names) blocks plugins before they load.
"""

from __future__ import annotations

import functools
import importlib
import os
import traceback
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from lladapt import hookspecs
from lladapt.errors import PluginError
from lladapt.registry import Registry

ENTRY_POINT_GROUP = "lladapt"
DISABLE_ENV = "LLADAPT_DISABLE_PLUGINS"

#: Built-in plugins, registered exactly as a third-party plugin would be. Each module is light:
#: its hooks import the implementation modules (and torch) only when called.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "lladapt.plugins.backbones",
    "lladapt.plugins.adapters",
    "lladapt.plugins.placements",
    "lladapt.plugins.datasets",
    "lladapt.plugins.answer_parsers",
    "lladapt.plugins.prompts",
)

#: kind -> hook name. The kinds of component a plugin can register.
KINDS: dict[str, str] = {
    "backbone": "register_backbones",
    "adapter": "register_adapters",
    "placement": "register_placements",
    "dataset": "register_datasets",
    "answer_parser": "register_answer_parsers",
    "prompt_template": "register_prompt_templates",
}


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or whose hook raised."""

    plugin: str
    distribution: str | None
    error: str
    detail: str  # the traceback, shown with --debug

    def __str__(self) -> str:
        dist = f" (distribution '{self.distribution}')" if self.distribution else ""
        return f"plugin '{self.plugin}'{dist} failed: {self.error}"


def disabled_plugins() -> set[str]:
    return {p.strip() for p in os.environ.get(DISABLE_ENV, "").split(",") if p.strip()}


_failures: list[PluginFailure] = []


def plugin_failures() -> list[PluginFailure]:
    """Plugins that failed to load or register, in the order met."""
    get_plugin_manager()
    return list(_failures)


def _short_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@functools.cache
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (built once; :func:`reset` clears it, for tests)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    blocked = disabled_plugins()
    for name in blocked:
        pm.set_blocked(name)
    for modname in BUILTIN_PLUGINS:
        if modname in blocked or modname.rsplit(".", 1)[-1] in blocked:
            continue
        pm.register(importlib.import_module(modname), name=modname)
    for ep in _entry_points():
        if ep.name in blocked or pm.is_registered(ep.name) or pm.get_plugin(ep.name):
            continue
        dist = ep.dist.name if ep.dist is not None else None
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken plugin must not take lladapt down
            _failures.append(PluginFailure(ep.name, dist, _short_error(exc), traceback.format_exc()))
    return pm


def _entry_points() -> list[metadata.EntryPoint]:
    seen: set[tuple[str, str]] = set()
    out = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = (ep.name, ep.value)
        if key not in seen:  # the same dist on sys.path twice yields duplicates
            seen.add(key)
            out.append(ep)
    return out


def _call_register_hook(pm: pluggy.PluginManager, hook_name: str, registry: Registry[Any]) -> None:
    hook = getattr(pm.hook, hook_name)
    for impl in reversed(hook.get_hookimpls()):  # registration order
        def register(cls, _plugin=impl.plugin_name):
            return registry.add(cls, plugin=_plugin)

        try:
            impl.function(register=register)
        except PluginError:
            raise
        except Exception as exc:
            dist = _distribution_of(impl.plugin_name)
            if dist is None and impl.plugin_name in BUILTIN_PLUGINS:
                raise  # a bug in lladapt itself: let it surface
            _failures.append(
                PluginFailure(impl.plugin_name, dist, _short_error(exc), traceback.format_exc())
            )


def _distribution_of(plugin_name: str) -> str | None:
    for ep in _entry_points():
        if ep.name == plugin_name:
            return ep.dist.name if ep.dist is not None else None
    return None


@functools.cache
def get_registry(kind: str) -> Registry[Any]:
    """The registry of one component kind (``backbone``, ``adapter``, ... see :data:`KINDS`)."""
    if kind not in KINDS:
        raise KeyError(f"unknown component kind '{kind}'; kinds: {', '.join(KINDS)}")
    registry: Registry[Any] = Registry(kind.replace("_", " "))
    _call_register_hook(get_plugin_manager(), KINDS[kind], registry)
    return registry


def reset() -> None:
    """Forget the plugin manager and registries (tests, or after installing a plugin)."""
    get_plugin_manager.cache_clear()
    get_registry.cache_clear()
    _failures.clear()
