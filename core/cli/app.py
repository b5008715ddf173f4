"""The root ``lladapt`` group: ``--version``, ``--debug`` and the turning of errors into one-line
messages and exit codes. The commands are added by :func:`lladapt.cli.main`."""

from __future__ import annotations

from typing import Any

import click

from lladapt.common.errors import LladaptError
from lladapt.common.version import __version__

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class LladaptGroup(click.Group):
    """Turns :class:`LladaptError` into a message and an exit code (traceback only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LladaptError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except OSError as exc:  # a file lladapt reads (writes are WriteErrors already)
            if ctx.obj and ctx.obj.get("debug"):
                raise
            from lladapt.common.fileio import cause_of

            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"Error: {where}{cause_of(exc)}", err=True)
            ctx.exit(1)
        except Exception as exc:  # a bug, or an error from a library: say so without a wall of text
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch's: not a bug
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                click.echo(f"Error: out of memory{': ' + first if first else ''}; lower "
                           "train.micro_batch_size or eval.batch_size, or use a smaller model", err=True)
                ctx.exit(1)
            click.echo(
                f"Error: unexpected {type(exc).__name__}: {exc}\n"
                "(rerun with `lladapt --debug ...` for the traceback, and report it if it is a bug)",
                err=True,
            )
            ctx.exit(1)


@click.group(cls=LladaptGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="lladapt")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """lladapt: parameter-efficient fine-tuning of LLMs (series, parallel, LoRA, prefix adapters).

    Components (backbones, adapters, placements, datasets, answer parsers, prompt templates) come
    from plugins; `lladapt plugins` lists them.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
