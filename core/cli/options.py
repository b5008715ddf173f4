"""Options and output helpers shared by the commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click


def set_option(func: Callable) -> Callable:
    return click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a config value by dotted path, e.g. --set train.learning_rate=1e-4.",
    )(func)


def json_option(func: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def report_plugin_failures() -> None:
    """Warn (stderr) about third-party plugins that failed, once per command."""
    from lladapt.components.plugin_manager import plugin_failures

    for failure in plugin_failures():
        click.echo(f"Warning: {failure}", err=True)


def resume_option(func: Callable) -> Callable:
    return click.option(
        "--resume", is_flag=True,
        help="Continue the run in output_dir from its newest complete checkpoint (same recipe).",
    )(func)
