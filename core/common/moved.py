"""Module paths of lladapt 0.1 that moved into the stage packages: they still import, each with a
:class:`DeprecationWarning` naming the new path, and will be removed in a later release
(CHANGELOG.md lists them).

Two kinds of moves:

* a module that moved whole (``lladapt.adapt`` -> ``lladapt.adapters.model``): importing the old
  path gives a thin module that reads every attribute from the new one (:data:`MOVED_MODULES`,
  served by a finder that :func:`install` puts on ``sys.meta_path``);
* a module whose name is now a stage package (``lladapt.models``, ``lladapt.data``): the package
  reads the old module's names from their new module on first use (:func:`moved_names`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Callable, Iterable
from typing import Any

#: old module path -> new module path, or the new modules its names are now spread over (an
#: attribute of the old path is looked up in each, in order)
MOVED_MODULES: dict[str, str | tuple[str, ...]] = {
    "lladapt.errors": "lladapt.common.errors",
    "lladapt.fileio": "lladapt.common.fileio",
    "lladapt.nested": "lladapt.common.nested",
    "lladapt.quiet": "lladapt.common.quiet",
    "lladapt.hf_compat": "lladapt.common.hf_compat",
    "lladapt.interfaces": "lladapt.components.interfaces",
    "lladapt.hookspecs": "lladapt.components.hookspecs",
    "lladapt.plugin_manager": "lladapt.components.plugin_manager",
    "lladapt.model_source": "lladapt.models.source",
    "lladapt.quantization": "lladapt.models.quantization",
    "lladapt.tokenizer_setup": "lladapt.models.tokenizer",
    "lladapt.layout_check": "lladapt.models.layout_check",
    "lladapt.adapt": ("lladapt.adapters.model", "lladapt.adapters.build", "lladapt.adapters.sites"),
    "lladapt.adapter_files": ("lladapt.adapters.files", "lladapt.adapters.model"),
    "lladapt.paper_checkpoints": ("lladapt.adapters.paper_import", "lladapt.adapters.model"),
    "lladapt.params": ("lladapt.adapters.count", "lladapt.adapters.meta_check"),
    "lladapt.meta_check": "lladapt.adapters.meta_check",
    "lladapt.data_sources": "lladapt.data.sources",
    "lladapt.tokenization": "lladapt.data.tokenization",
    "lladapt.overlap": "lladapt.data.overlap",
    "lladapt.quickstart": "lladapt.cli.quickstart",
    "lladapt.cli_data": "lladapt.cli.data",
    "lladapt.commands": "lladapt.cli",
    "lladapt.commands.compare": "lladapt.cli.compare",
    "lladapt.commands.evaluate": "lladapt.cli.evaluate",
    "lladapt.commands.report": "lladapt.cli.report",
    "lladapt.commands.sweep": "lladapt.cli.sweep",
    "lladapt.sweep.child": "lladapt.cli.sweep_child",
}


def _stacklevel() -> int:
    """The warning's stack level that points at the user's import statement, past the frames of
    this module (``warnings`` itself skips the import machinery's frames when it counts)."""
    frame, level = sys._getframe(1), 1
    while frame is not None:
        if frame.f_code.co_filename == __file__:
            level += 1
        elif not frame.f_code.co_filename.startswith("<frozen importlib"):
            break
        frame = frame.f_back
    return level


def _targets(old: str) -> tuple[str, ...]:
    new = MOVED_MODULES[old]
    return (new,) if isinstance(new, str) else new


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; import it from there ({old} will be removed)",
                  DeprecationWarning, stacklevel=_stacklevel())


def _forwarder(old: str) -> Callable[[str], Any]:
    def __getattr__(name: str) -> Any:
        for new in _targets(old):
            module = importlib.import_module(new)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {old!r} has no attribute {name!r}")

    return __getattr__


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as a module that forwards every attribute to the new one."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None):
        if fullname not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=fullname == "lladapt.commands")

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        _warn(spec.name, " and ".join(_targets(spec.name)))
        return types.ModuleType(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        old = module.__name__
        module.__getattr__ = _forwarder(old)  # type: ignore[method-assign]
        module.__dir__ = lambda: sorted(  # type: ignore[method-assign]
            {n for new in _targets(old) for n in dir(importlib.import_module(new))})


def install() -> None:
    """Serve :data:`MOVED_MODULES` (once per process)."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())


def moved_names(package: str, new: str, names: Iterable[str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``, whose old module of the same name defined
    ``names``: each now comes from module ``new``, with a DeprecationWarning."""
    known = frozenset(names)

    def __getattr__(name: str) -> Any:
        if name not in known:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        _warn(f"{package}.{name}", f"{new}.{name}")
        value = getattr(importlib.import_module(new), name)
        setattr(sys.modules[package], name, value)  # one warning: `from ... import` reads it twice
        return value

    return __getattr__
