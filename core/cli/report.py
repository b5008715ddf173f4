"""``lladapt report RUN_DIR... [--out DIR]``: tables and charts over run folders."""

from __future__ import annotations

from pathlib import Path

import click


def register(cli: click.Group) -> None:
    cli.add_command(report)


@click.command()
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True,
                type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("report"),
              show_default=True, help="Folder for report.md, report.csv and the PNG charts.")
@click.option("--no-charts", is_flag=True, help="Write the tables only (no matplotlib needed).")
def report(run_dirs: tuple[Path, ...], out: Path, no_charts: bool) -> None:
    """A table like the paper's over run folders (rows: model and adapter; columns: datasets,
    average, trainable parameters, unparsed answers) as Markdown and CSV; every pair of runs that
    kept their predictions compared item by item (exact McNemar, as `lladapt compare`), in the
    Markdown and in paired.json; and PNG charts of accuracy per dataset and of training/validation
    loss (needs the `report` extra: matplotlib)."""
    from lladapt.evaluation.report import write_report

    for path in write_report(list(run_dirs), out, charts=not no_charts):
        click.echo(str(path))
