"""An example third-party lladapt plugin, packaged with its own entry point (see pyproject.toml
beside this folder). It adds an answer parser and a CLI command, the way a real plugin would."""

from __future__ import annotations

import re

import click

import lladapt


class YesNoParser(lladapt.AnswerParser):
    """Reads 'yes' or 'no' (the first one in the response)."""

    name = "yesno"

    class Config(lladapt.ComponentConfig):
        default: str | None = None

    def parse(self, text: str) -> str | None:
        match = re.search(r"\b(yes|no)\b", text.lower())
        return match.group(1) if match else self.config.default

    def is_correct(self, prediction: str | None, gold: str) -> bool:
        return prediction is not None and prediction == gold.strip().lower()


@lladapt.hookimpl
def register_answer_parsers(register):
    register(YesNoParser)


@lladapt.hookimpl
def register_commands(cli):
    @cli.command(name="hello-example")
    def hello_example():
        """Say hello from the example plugin."""
        click.echo("hello from lladapt_example")
