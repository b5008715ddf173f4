"""``lladapt plugins [--json]``: every registered component and the plugins that failed to load."""

from __future__ import annotations

import sys

import click

from lladapt.cli.options import echo_json, json_option, report_plugin_failures


def register(cli: click.Group) -> None:
    cli.add_command(plugins)


@click.command()
@json_option
def plugins(as_json: bool) -> None:
    """List every registered component: kind, name, providing plugin, its distribution and
    version, description."""
    from lladapt.components.plugin_manager import KINDS, get_registry, plugin_failures, plugin_info

    rows = []
    for kind in KINDS:
        for entry in get_registry(kind).entries():
            info = plugin_info(entry.plugin)
            rows.append(
                {
                    "kind": kind,
                    "name": entry.name,
                    "plugin": entry.plugin,
                    "distribution": info.distribution,
                    "version": info.version,
                    "description": entry.cls.description(),
                    "aliases": list(getattr(entry.cls, "aliases", ())),
                }
            )
    failures = [
        {"plugin": f.plugin, "distribution": f.distribution, "error": f.error}
        for f in plugin_failures()
    ]
    if as_json:
        echo_json({"components": rows, "failures": failures})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("kind", "name", "plugin", "distribution", "description", box=None, pad_edge=False)
    for row in rows:
        dist = plugin_info(row["plugin"]).label
        table.add_row(row["kind"], row["name"], row["plugin"], dist, row["description"])
    Console(soft_wrap=False, width=200 if not sys.stdout.isatty() else None).print(table)
    report_plugin_failures()
