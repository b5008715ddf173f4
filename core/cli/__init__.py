"""The ``lladapt`` command line: the root group (:mod:`.app`), shared options (:mod:`.options`) and
one module per command or command group, each with a ``register(cli)`` function. Commands import
torch only when they run, so ``--help`` is fast."""

from __future__ import annotations

from lladapt.cli import (
    adapter,
    compare,
    data,
    evaluate,
    generate,
    params,
    plugins,
    report,
    run,
    serve,
    sweep,
    validate,
)
from lladapt.cli.app import cli

__all__ = ["cli", "main"]

#: the built-in commands' modules (each light: a command imports what it needs when it runs)
_COMMAND_MODULES = (run, validate, params, plugins, data, evaluate, report, compare, sweep, adapter, generate, serve)


def _load_core_commands() -> None:
    """Add the built-in commands to :data:`cli` (done on import; adding again changes nothing)."""
    for module in _COMMAND_MODULES:
        module.register(cli)


def _load_plugin_commands() -> None:
    from lladapt.components.plugin_manager import get_plugin_manager

    get_plugin_manager().hook.register_commands(cli=cli)


_load_core_commands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _load_plugin_commands()
    cli.main(args=argv, prog_name="lladapt")
