"""``lladapt serve TARGET...``: one base model and its adapters behind an OpenAI-compatible API."""

from __future__ import annotations

import click

from lladapt.cli.options import report_plugin_failures


def register(cli: click.Group) -> None:
    cli.add_command(serve_command)


@click.command("serve")
@click.argument("targets", metavar="RUN_DIR|ADAPTER_DIR|NAMES.yaml...", nargs=-1)
@click.option("--model", help="The base model (default: the runs' model; needed for bare adapter folders).")
@click.option("--template", help="Prompt template of the base model and of bare adapter folders (default: the runs', else alpaca).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback: this machine only).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", envvar="LLADAPT_API_KEY", help="Require 'Authorization: Bearer KEY' on every route but /health and / (env: LLADAPT_API_KEY).")
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True, help="Rows generated together at most.")
@click.option("--max-tokens", "default_max_tokens", type=click.IntRange(min=1), default=256, show_default=True,
              help="New tokens of a chat request that sets no max_tokens.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch's CPU threads (default: torch's; on a busy machine 1 is often faster).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info")
def serve_command(targets: tuple[str, ...], model: str | None, template: str | None, host: str, port: int,
                  api_key: str | None, max_batch: int, default_max_tokens: int, threads: int | None,
                  log_level: str) -> None:
    """Serve a base model and any number of trained adapters of any kinds (run folders, adapter
    folders, or a YAML file mapping names to folders) over HTTP: OpenAI's /v1/models,
    /v1/completions and /v1/chat/completions (`model` picks the adapter; `base` is the model
    alone), and a playground page at /. LoRA, series and parallel adapters share forward passes
    (one batch, each row with its adapter); prefix and prompt tuning get batches of their own.
    SIGTERM finishes the requests in flight, then exits."""
    from lladapt.serving.server import run_server
    from lladapt.serving.spec import serve_spec

    report_plugin_failures()
    spec = serve_spec(targets, model=model, template=template)
    run_server(spec, host=host, port=port, api_key=api_key, max_rows=max_batch,
               default_max_tokens=default_max_tokens, threads=threads, log_level=log_level,
               echo=lambda line: click.echo(line, err=True))
