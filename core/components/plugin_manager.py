"""Discovers plugins (built-ins listed in code, third parties through the ``lladapt`` entry-point
group) and builds the component registries from their hooks.

A third-party plugin that fails to import, or whose hook raises, is recorded in
:func:`plugin_failures` by distribution and entry-point name; commands that do not need it go on.
``LLADAPT_DISABLE_PLUGINS`` (comma-separated plugin or distribution names) blocks plugins before
they load; a config naming one of their components is told so.

Two distributions may choose the same entry-point name: both load, the second under
``NAME@DISTRIBUTION``. Each plugin's distribution and version are kept (:func:`plugin_info`) for
``lladapt plugins`` and for error messages.
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

from lladapt.common.errors import PluginError
from lladapt.components import hookspecs
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


@dataclass(frozen=True)
class PluginInfo:
    """Where a registered plugin comes from: its distribution and version (``lladapt plugins``)."""

    plugin: str
    distribution: str | None
    version: str | None

    @property
    def label(self) -> str:
        """``lladapt-ia3 0.1.0``: what a user upgrades or uninstalls."""
        if self.distribution is None:
            return "?"
        return f"{self.distribution} {self.version}" if self.version else self.distribution


_infos: dict[str, PluginInfo] = {}
#: entry points found but blocked by LLADAPT_DISABLE_PLUGINS: plugin name -> its info.
_disabled: dict[str, PluginInfo] = {}


def plugin_info(plugin: str) -> PluginInfo:
    """The distribution and version of a registered plugin (built-ins: lladapt's)."""
    get_plugin_manager()
    return _infos.get(plugin, PluginInfo(plugin, None, None))


def disabled_entry_points() -> dict[str, PluginInfo]:
    """Third-party plugins found on the path but blocked by ``LLADAPT_DISABLE_PLUGINS``."""
    get_plugin_manager()
    return dict(_disabled)


def _info(plugin: str, ep: metadata.EntryPoint) -> PluginInfo:
    dist = ep.dist
    if dist is None:
        return PluginInfo(plugin, None, None)
    return PluginInfo(plugin, dist.name, dist.version)


def _is_blocked(ep: metadata.EntryPoint, blocked: set[str]) -> bool:
    """Blocked by entry-point name or by distribution name."""
    return ep.name in blocked or (ep.dist is not None and ep.dist.name in blocked)


def _plugin_name(pm: pluggy.PluginManager, ep: metadata.EntryPoint) -> str:
    """The entry-point name, or ``NAME@DISTRIBUTION`` when another distribution took that name
    first, so that two distributions that chose the same entry-point name both load."""
    if pm.get_plugin(ep.name) is None and ep.name not in _infos:
        return ep.name
    dist = ep.dist.name if ep.dist is not None else "?"
    return f"{ep.name}@{dist}"


@functools.cache
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (built once; :func:`reset` clears it, for tests)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    blocked = disabled_plugins()
    builtin = PluginInfo("", "lladapt", _lladapt_version())
    for modname in BUILTIN_PLUGINS:
        if modname in blocked or modname.rsplit(".", 1)[-1] in blocked:
            _disabled[modname] = PluginInfo(modname, builtin.distribution, builtin.version)
            continue
        pm.register(importlib.import_module(modname), name=modname)
        _infos[modname] = PluginInfo(modname, builtin.distribution, builtin.version)
    for ep in _entry_points():
        if _is_blocked(ep, blocked):
            _disabled[ep.name] = _info(ep.name, ep)
            continue
        name = _plugin_name(pm, ep)
        info = _info(name, ep)
        _infos[name] = info
        try:
            plugin = ep.load()
            if pm.is_registered(plugin):  # two entry points naming the same module
                other = pm.get_name(plugin)
                raise PluginError(
                    f"module '{ep.value}' is registered already, as plugin '{other}' "
                    f"(distribution '{plugin_info(other).distribution}')"
                )
            pm.register(plugin, name=name)
        except Exception as exc:  # a broken plugin must not take lladapt down
            _failures.append(
                PluginFailure(name, info.distribution, _short_error(exc), traceback.format_exc())
            )
    return pm


def _entry_points() -> list[metadata.EntryPoint]:
    seen: set[tuple[str, str, str | None]] = set()
    out = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = (ep.name, ep.value, ep.dist.name if ep.dist is not None else None)
        if key not in seen:  # the same dist on sys.path twice yields duplicates
            seen.add(key)
            out.append(ep)
    return out


def _lladapt_version() -> str:
    from lladapt.common.version import __version__

    return __version__


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
    info = _infos.get(plugin_name)
    return info.distribution if info is not None and plugin_name not in BUILTIN_PLUGINS else None


def describe_plugin(plugin: str) -> str:
    """``plugin 'ia3' (distribution 'lladapt-ia3 0.1.0')``: how messages name a plugin."""
    info = _infos.get(plugin)
    dist = f" (distribution '{info.label}')" if info is not None and info.distribution else ""
    return f"plugin '{plugin}'{dist}"


def _explain_unknown(name: str) -> str | None:
    """Why a component name is unknown, when a disabled plugin may be the reason."""
    if not _disabled:
        return None
    setting = f"{DISABLE_ENV}={os.environ.get(DISABLE_ENV, '')}"
    for plugin, info in _disabled.items():
        if name.lower() in {plugin.lower(), plugin.rsplit(".", 1)[-1].lower(),
                            (info.distribution or "").lower()}:
            return f"its plugin '{plugin}' (distribution '{info.label}') is disabled by {setting}"
    names = ", ".join(f"'{p}' ({info.label})" for p, info in _disabled.items())
    return f"no enabled plugin registers it, and {setting} disables {names}, which may provide it"


@functools.cache
def get_registry(kind: str) -> Registry[Any]:
    """The registry of one component kind (``backbone``, ``adapter``, ... see :data:`KINDS`)."""
    if kind not in KINDS:
        raise KeyError(f"unknown component kind '{kind}'; kinds: {', '.join(KINDS)}")
    registry: Registry[Any] = Registry(
        kind.replace("_", " "), describe_plugin=describe_plugin, explain_unknown=_explain_unknown
    )
    _call_register_hook(get_plugin_manager(), KINDS[kind], registry)
    return registry


def reset() -> None:
    """Forget the plugin manager and registries (tests, or after installing a plugin)."""
    get_plugin_manager.cache_clear()
    get_registry.cache_clear()
    _failures.clear()
    _infos.clear()
    _disabled.clear()
