"""``lladapt compare RUN_A RUN_B [--json]``: two runs item by item, with the exact McNemar test."""

from __future__ import annotations

from pathlib import Path

import click

from lladapt.cli.options import echo_json, json_option


def register(cli: click.Group) -> None:
    cli.add_command(compare)


@click.command()
@click.argument("run_a", metavar="RUN_A", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("run_b", metavar="RUN_B", type=click.Path(file_okay=False, exists=True, path_type=Path))
@json_option
def compare(run_a: Path, run_b: Path, as_json: bool) -> None:
    """Compare two run folders on the items both evaluated: per dataset and pooled, the accuracy
    of each, the items only one of them got right, and the exact McNemar p-value (the chance of
    a split at least this uneven if both were equally good). Reads the predictions in each run's
    eval/ folder; items must have been asked the same way in both."""
    from lladapt.evaluation.paired import compare_runs, format_p

    result = compare_runs(run_a, run_b)
    if as_json:
        echo_json(result)
        return
    click.echo(f"A: {run_a}\nB: {run_b}\n")
    click.echo("| entry | items | A % | B % | only A right | only B right | p (exact McNemar) |")
    click.echo("|---|---:|---:|---:|---:|---:|---:|")
    for row in [*result["entries"], result["all"]]:
        click.echo(f"| {row['label']} | {row['items']} | {100 * row['accuracy_a']:.1f} | "
                   f"{100 * row['accuracy_b']:.1f} | {row['only_a']} | {row['only_b']} | "
                   f"{format_p(row['p_value'])} |")
    if result["unmatched"]:
        left = ", ".join(f"{label} {count}" for label, count in result["unmatched"].items())
        click.echo(f"\nItems only one run has, left out: {left}")
