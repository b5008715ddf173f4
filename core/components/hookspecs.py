"""The hooks a lladapt plugin can implement.

Each ``register_*`` hook receives a ``register`` callable and calls it once per component class:

.. code-block:: python

    from lladapt import hookimpl

    @hookimpl
    def register_adapters(register):
        register(MyAdapter)

Hooks only ever grow by new keyword arguments, which pluggy lets old implementations ignore, so a
plugin written today keeps working.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import click

    from lladapt.components.interfaces import (
        Adapter,
        AnswerParser,
        Backbone,
        Dataset,
        Placement,
        PromptTemplate,
    )

PROJECT = "lladapt"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

T = TypeVar("T")
Register = Callable[[type[T]], type[T]]


@hookspec
def register_backbones(register: Register[Backbone]) -> None:
    """Register Backbone classes: call ``register(MyBackbone)`` for each.

    A backbone knows how to load a model family (its ``model_types``), its preset architectures
    and the layout of its decoder layers by role, so that placements never hard-code module names.
    """


@hookspec
def register_adapters(register: Register[Adapter]) -> None:
    """Register Adapter classes: call ``register(MyAdapter)`` for each.

    An adapter inserts trainable modules at the sites a placement resolves; the base stays frozen.
    """


@hookspec
def register_placements(register: Register[Placement]) -> None:
    """Register Placement classes: call ``register(MyPlacement)`` for each.

    A placement turns a backbone layout into the list of sites (layer, module, mode) an adapter
    goes to.
    """


@hookspec
def register_datasets(register: Register[Dataset]) -> None:
    """Register Dataset classes: call ``register(MyDataset)`` for each.

    A dataset yields examples ``{instruction, input, output, answer}`` per split and names its
    answer parser, metric and generation length.
    """


@hookspec
def register_answer_parsers(register: Register[AnswerParser]) -> None:
    """Register AnswerParser classes: call ``register(MyParser)`` for each.

    A parser turns a model's response into an answer (None when it finds none) and compares it
    with the gold answer.
    """


@hookspec
def register_prompt_templates(register: Register[PromptTemplate]) -> None:
    """Register PromptTemplate classes: call ``register(MyTemplate)`` for each.

    A template renders an example into its training and evaluation prompts.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``lladapt`` CLI: ``@cli.command() def mycmd(): ...``.

    Keep this hook's module light (import torch inside the command, not at import time): every
    ``lladapt`` invocation, ``--help`` included, runs it.
    """
