"""``lladapt validate CONFIG``: every config error at once, then the adapter placed on the meta
device. Torch is imported only once the fields are valid (the meta-device check needs it)."""

from __future__ import annotations

import click

from lladapt.cli.options import report_plugin_failures, set_option


def register(cli: click.Group) -> None:
    cli.add_command(validate)


@click.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@set_option
def validate(config_path: str, overrides: tuple[str, ...]) -> None:
    """Check a config file: every error at once, each under its dotted path. Once the fields are
    valid, the adapter is placed on the model's architecture on the meta device (as `params`
    does): unknown modules, modes, layers out of range."""
    from lladapt.adapters.meta_check import attach_on_meta
    from lladapt.config import load_config

    report_plugin_failures()
    attach_on_meta(load_config(config_path, overrides), source=config_path)
    click.echo(f"{config_path}: valid")
