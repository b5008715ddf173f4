"""lladapt: parameter-efficient fine-tuning of LLMs with a plugin architecture.

The public API. Importing it is cheap (no torch); the heavy parts load when first used.
"""

from __future__ import annotations

from lladapt.common import moved as _moved
from lladapt.common import quiet as _quiet
from lladapt.common.errors import (
    AdapterError,
    ConfigError,
    DataError,
    LladaptError,
    ModelLoadError,
    PlacementError,
    PluginError,
    UnknownComponentError,
)
from lladapt.common.version import __version__
from lladapt.components.hookspecs import hookimpl
from lladapt.components.interfaces import (
    Adapter,
    AnswerParser,
    Backbone,
    Component,
    ComponentConfig,
    Dataset,
    Example,
    LayerLayout,
    Layout,
    Placement,
    PromptTemplate,
    Site,
)

_quiet.install()
_moved.install()

__all__ = [
    "Adapter",
    "AdapterError",
    "AnswerParser",
    "Backbone",
    "Component",
    "ComponentConfig",
    "ConfigError",
    "DataError",
    "Dataset",
    "Example",
    "LayerLayout",
    "Layout",
    "LladaptError",
    "ModelLoadError",
    "Placement",
    "PlacementError",
    "PluginError",
    "PromptTemplate",
    "Site",
    "UnknownComponentError",
    "__version__",
    "get_registry",
    "hookimpl",
    "load_config",
]


def get_registry(kind: str):
    """The registry of one component kind: ``backbone``, ``adapter``, ``placement``,
    ``dataset``, ``answer_parser`` or ``prompt_template``."""
    from lladapt.components.plugin_manager import get_registry as _get

    return _get(kind)


def load_config(source, overrides=()):
    """Load and validate a config from a path (YAML/JSON) or a dict, with ``key=value``
    overrides. Raises :class:`ConfigError` listing every problem."""
    from lladapt.config import load_config as _load

    return _load(source, overrides)
