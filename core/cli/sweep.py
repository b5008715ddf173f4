"""``lladapt sweep SWEEP.yaml [--executor local|ray]``: run a grid of runs, then report."""

from __future__ import annotations

from pathlib import Path

import click

from lladapt.cli.options import echo_json, report_plugin_failures, set_option


def register(cli: click.Group) -> None:
    cli.add_command(sweep)


@click.command()
@click.argument("sweep_path", metavar="SWEEP", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: one run after another here; ray: each run a Ray task (pip install 'lladapt[ray]').")
@click.option("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray instance).")
@click.option("--only", multiple=True, metavar="RUN", help="Run only these runs (repeatable).")
@click.option("--dry-run", is_flag=True, help="List the runs and the state of their folders; run nothing.")
@click.option("--report-only", is_flag=True, help="Write the combined report of the finished runs; run nothing.")
@set_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan (with --dry-run) as JSON.")
def sweep(sweep_path: Path, executor: str, address: str | None, only: tuple[str, ...], dry_run: bool,
          report_only: bool, overrides: tuple[str, ...], as_json: bool) -> None:
    """Expand SWEEP's grid into runs (each into OUTPUT_DIR/<run>), skip the finished ones, resume
    the ones that were cut off, run the rest, then write the combined `lladapt report` of every
    finished run. --set KEY=VALUE applies to every run. Exits 1 if a run failed."""
    from lladapt.sweep import load_sweep, plan, run_sweep
    from lladapt.sweep.runner import describe_plan, write_combined_report

    report_plugin_failures()
    loaded = load_sweep(sweep_path, overrides)
    if dry_run:
        rows = describe_plan(plan(loaded, only))
        if as_json:
            echo_json(rows)
            return
        for row in rows:
            budget = f"  budget {row['budget']}" if row["budget"] else ""
            click.echo(f"{row['run']:<24} {row['status']:<9} {row['output_dir']}{budget}")
        return
    if report_only:
        for path in write_combined_report(loaded, echo=lambda m: click.echo(m, err=True)):
            click.echo(str(path))
        return
    result = run_sweep(loaded, executor=executor, only=only, address=address,
                       echo=lambda m: click.echo(m, err=True))
    for path in result.report:
        click.echo(str(path))
    if result.failed:
        names = ", ".join(f"{o.name} (log: {o.log_path})" for o in result.failed)
        raise click.ClickException(f"{len(result.failed)} run(s) failed: {names}; rerun the same command to retry them")
