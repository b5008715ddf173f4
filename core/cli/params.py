"""``lladapt params CONFIG [--json]``: trainable and total parameters, no weights loaded."""

from __future__ import annotations

import click

from lladapt.cli.options import echo_json, json_option, report_plugin_failures, set_option


def register(cli: click.Group) -> None:
    cli.add_command(params)


@click.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@set_option
@json_option
def params(config_path: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Count parameters (trainable / total) without loading weights: the model is built on the
    meta device from its config or preset."""
    from lladapt.adapters.meta_check import count_parameters
    from lladapt.config import load_config

    report_plugin_failures()
    config = load_config(config_path, overrides)
    counts = count_parameters(config, source=config_path)
    if as_json:
        echo_json(counts)
        return
    click.echo(f"model:     {counts['model']}")
    click.echo(f"adapter:   {counts['adapter'] or '(none)'}")
    click.echo(f"trainable: {counts['trainable']:,}")
    click.echo(f"total:     {counts['total']:,}")
    click.echo(f"share:     {counts['trainable_percent']:.4f}%")
