"""``lladapt eval CONFIG [--adapter DIR]``: evaluate without training."""

from __future__ import annotations

from pathlib import Path

import click

from lladapt.cli.options import echo_json, report_plugin_failures, set_option


def register(cli: click.Group) -> None:
    cli.add_command(eval_command)


@click.command("eval")
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--adapter", "adapter_dir", type=click.Path(file_okay=False, path_type=Path),
              help="A saved adapter folder (lladapt's or PEFT's) to evaluate on the config's model.")
@click.option("--untrained-adapter", is_flag=True,
              help="Evaluate the config's adapter with its initial weights (no --adapter).")
@click.option("--no-merge", is_flag=True, help="Do not fold the adapter into the weights (LoRA).")
@set_option
def eval_command(config_path: str, adapter_dir: Path | None, untrained_adapter: bool,
                 no_merge: bool, overrides: tuple[str, ...]) -> None:
    """Evaluate CONFIG's model (with --adapter DIR or adapter.path: a trained adapter) on
    eval.datasets. Predictions go to OUTPUT_DIR/eval/ as batches finish; rerunning the same
    command after an interruption computes only the items that are missing."""
    from lladapt.api import evaluate
    from lladapt.config import load_config

    report_plugin_failures()
    extra = ["eval.untrained_adapter=true"] * untrained_adapter + ["eval.merge_adapter=false"] * no_merge
    config = load_config(config_path, [*overrides, *extra])
    echo_json(evaluate(config, adapter=adapter_dir))
