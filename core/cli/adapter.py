"""``lladapt adapter fix-config DIR``: rewrite an adapter folder's ``adapter_config.json`` from the
metadata of its weights file, when the two disagree (lladapt would read one adapter, PEFT
another)."""

from __future__ import annotations

from pathlib import Path

import click


def register(cli: click.Group) -> None:
    cli.add_command(adapter)


@click.group()
def adapter() -> None:
    """Adapter folders (adapter_config.json + adapter_model.safetensors)."""


@adapter.command("fix-config")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, exists=True, path_type=Path))
def fix_config(directory: Path) -> None:
    """Rewrite DIR/adapter_config.json from the metadata in DIR/adapter_model.safetensors (what
    lladapt loads), so that PEFT reads the same adapter. The weights are not touched."""
    from lladapt.adapters.files import rewrite_config

    click.echo(f"rewrote {rewrite_config(directory)} from the metadata of its weights")
