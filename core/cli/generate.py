"""``lladapt generate CONFIG_OR_RUN_DIR INSTRUCTION``: one answer from a trained adapter."""

from __future__ import annotations

from pathlib import Path

import click

from lladapt.cli.options import report_plugin_failures, set_option


def register(cli: click.Group) -> None:
    cli.add_command(generate_command)


@click.command("generate")
@click.argument("target", metavar="CONFIG_OR_RUN_DIR", type=click.Path(exists=True, path_type=Path))
@click.argument("instruction")
@click.option("--input", "input_text", default="", help="The instruction's input (the template's Input section).")
@click.option("--adapter", "adapter_dir", type=click.Path(file_okay=False, path_type=Path),
              help="An adapter folder to use instead of the run's adapter/ (or adapter.path).")
@click.option("--temperature", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="0: greedy (the evaluator's answer); above 0: sampling.")
@click.option("--top-p", type=click.FloatRange(0.0, 1.0, min_open=True), default=1.0, show_default=True)
@click.option("--top-k", type=click.IntRange(min=0), default=0, show_default=True, help="0: off.")
@click.option("--num-beams", type=click.IntRange(min=1), default=None, help="Beam search (default: eval.num_beams).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
              help="Default: eval.max_new_tokens, else 128.")
@click.option("--seed", type=int, default=None, help="Seed for sampling.")
@click.option("--stream", is_flag=True, help="Print the tokens as they come.")
@set_option
def generate_command(target: Path, instruction: str, input_text: str, adapter_dir: Path | None,
                     temperature: float, top_p: float, top_k: int, num_beams: int | None,
                     max_new_tokens: int | None, seed: int | None, stream: bool,
                     overrides: tuple[str, ...]) -> None:
    """Print the response to INSTRUCTION of the run in CONFIG_OR_RUN_DIR (a run folder: its
    config.json and adapter/; or a config file), rendered through the run's prompt template.
    Greedy answers are the ones `lladapt eval` gives for the same item."""
    from lladapt.evaluation.continuous import Sampling
    from lladapt.serving.generate import GenerateSettings, generate_response

    report_plugin_failures()
    settings = GenerateSettings(max_new_tokens=max_new_tokens, num_beams=num_beams,
                                sampling=Sampling(temperature, top_p, top_k, seed), stream=stream)
    response = generate_response(target, instruction, input=input_text, adapter=adapter_dir,
                                 settings=settings, overrides=overrides)
    click.echo("" if stream else response)
