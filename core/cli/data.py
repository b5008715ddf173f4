"""``lladapt data``: list the datasets, show records, fetch files, check train/test overlap.

Heavy or slow work (reading files) happens inside the commands; importing this module is cheap.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from lladapt.cli.options import echo_json, json_option, report_plugin_failures

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A local copy of the paper's data (default: LLADAPT_DATA_DIR, then the cache).",
)


def register(cli: click.Group) -> None:
    """Add the ``data`` command group to the ``lladapt`` CLI."""
    cli.add_command(data)


@click.group()
def data() -> None:
    """Datasets: list them, show their records, fetch their files, check train/test overlap."""


def _split_counts(name: str, splits: tuple[str, ...], data_dir: Path | None) -> dict[str, int | None]:
    """Records per split, from local copies only (nothing is downloaded); None when unavailable."""
    from lladapt.common.errors import LladaptError
    from lladapt.data.loading import build_dataset
    from lladapt.data.sources import no_download

    counts: dict[str, int | None] = {}
    try:
        dataset = build_dataset(name, data_dir=data_dir)
    except LladaptError:  # needs fields only a config gives (the json dataset's path)
        return dict.fromkeys(splits)
    for split in splits:
        try:
            with no_download():
                counts[split] = len(dataset.load(split))
        except LladaptError:
            counts[split] = None
    return counts


@data.command("list")
@data_dir_option
@json_option
def list_datasets(data_dir: Path | None, as_json: bool) -> None:
    """Every dataset: name, aliases, task, splits with record counts (when the files are available
    locally), answer parser, metric and generation length."""
    from lladapt.components.plugin_manager import get_registry

    report_plugin_failures()
    rows: list[dict[str, Any]] = []
    for entry in get_registry("dataset").entries():
        cls = entry.cls
        rows.append(
            {
                "name": entry.name,
                "aliases": list(cls.aliases),
                "task": cls.task,
                "splits": _split_counts(entry.name, tuple(cls.splits), data_dir),
                "parser": cls.parser,
                "metric": cls.metric,
                "max_new_tokens": cls.max_new_tokens,
                "plugin": entry.plugin,
                "description": cls.description(),
            }
        )
    if as_json:
        echo_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "task", "splits (records)", "parser", "new tokens", "aliases", box=None, pad_edge=False)
    for row in rows:
        splits = ", ".join(f"{s} {'-' if n is None else n}" for s, n in row["splits"].items())
        table.add_row(row["name"], row["task"], splits, row["parser"], str(row["max_new_tokens"]),
                      ", ".join(row["aliases"]))
    Console(soft_wrap=False, width=200 if not sys.stdout.isatty() else None).print(table)


def _default_show_split(splits: tuple[str, ...]) -> str:
    return "test" if "test" in splits else splits[0]


@data.command("show")
@click.argument("name")
@click.option("--split", default=None, help="Split to show (default: test, else the first).")
@click.option("-n", "count", type=click.IntRange(min=0), default=3, show_default=True,
              help="Number of records to show.")
@data_dir_option
@json_option
def show(name: str, split: str | None, count: int, data_dir: Path | None, as_json: bool) -> None:
    """Show the first records of a dataset split."""
    from lladapt.data.loading import build_dataset, load_examples

    dataset = build_dataset(name, data_dir=data_dir)
    split = split or _default_show_split(tuple(dataset.splits))
    examples = load_examples(name, split, data_dir=data_dir)
    shown = examples[:count]
    if as_json:
        echo_json(
            {
                "name": dataset.name,
                "split": split,
                "records": len(examples),
                "examples": [
                    {"source": ex.source, "instruction": ex.instruction, "input": ex.input,
                     "output": ex.output, "answer": ex.answer}
                    for ex in shown
                ],
            }
        )
        return
    click.echo(f"{dataset.name} / {split}: {len(examples)} records (parser: {dataset.parser})")
    for ex in shown:
        click.echo(f"\n--- {ex.source}")
        click.echo(f"instruction: {ex.instruction}")
        if ex.input:
            click.echo(f"input: {ex.input}")
        click.echo(f"output: {ex.output}")
        click.echo(f"answer: {ex.answer}")


def _name_split(value: str, default: str) -> tuple[str, str]:
    name, _, split = value.partition(":")
    return name, split or default


@data.command("fetch")
@click.argument("names", nargs=-1, required=True)
@click.option("--split", "splits", multiple=True, help="Splits to fetch (default: all).")
@data_dir_option
def fetch(names: tuple[str, ...], splits: tuple[str, ...], data_dir: Path | None) -> None:
    """Make datasets' files available locally (downloading and verifying them if needed)."""
    from lladapt.data.loading import build_dataset

    for name in names:
        dataset = build_dataset(name, data_dir=data_dir)
        for split in splits or dataset.splits:
            n = len(dataset.load(split))
            click.echo(f"{dataset.name} / {split}: {n} records")


@data.command("overlap")
@click.argument("train", metavar="TRAIN[:SPLIT]")
@click.argument("evaluation", metavar="EVAL[:SPLIT]")
@click.option("--show", "show_items", type=click.IntRange(min=0), default=0,
              help="Also print this many of the overlapping items.")
@data_dir_option
@json_option
def overlap(train: str, evaluation: str, show_items: int, data_dir: Path | None, as_json: bool) -> None:
    """How many items of EVAL (default split: test) are in TRAIN (default split: train), matched on
    the whitespace-normalised, lower-cased instruction (and input)."""
    from lladapt.data.loading import load_set
    from lladapt.data.overlap import find_overlap

    trained = load_set(*_name_split(train, "train"), data_dir=data_dir)
    evaluated = load_set(*_name_split(evaluation, "test"), data_dir=data_dir)
    report = find_overlap(
        trained.examples, evaluated.examples, train_name=trained.label, eval_name=evaluated.label
    )
    if as_json:
        echo_json(report.to_dict())
        return
    click.echo(
        f"{report.seen_count} of {report.eval_records} {report.eval} items are in {report.train} "
        f"({report.train_records} records); {report.unseen_count} unseen"
    )
    for ex in report.seen[:show_items]:
        click.echo(f"  {ex.source}: {ex.instruction.strip()[:100]}")
