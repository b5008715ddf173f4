"""Run a sweep: skip the finished runs, resume the cut-off ones, start the rest on an executor,
then write the combined ``lladapt report`` over every finished run.

Files under the sweep's ``output_dir``: ``<run>/`` (each run's folder), ``configs/<run>.json`` (the
config each run was started with), ``logs/<run>.log`` (its output), ``sweep.json`` (the plan and
what became of each run), and ``report/`` unless the sweep names another folder.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lladapt.common.errors import LladaptError
from lladapt.common.fileio import make_dirs, write_bytes_atomic, write_json_atomic
from lladapt.common.folder_lock import locked_folder
from lladapt.sweep.executors import EXECUTORS, Job, Outcome
from lladapt.sweep.spec import PlannedRun, Sweep
from lladapt.sweep.state import Status, run_status

__all__ = ["SweepResult", "plan", "run_sweep"]

SWEEP_FILE = "sweep.json"


@dataclass
class Planned:
    run: PlannedRun
    status: Status


@dataclass
class SweepResult:
    planned: list[Planned]
    outcomes: list[Outcome] = field(default_factory=list)
    report: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


def plan(sweep: Sweep, only: Sequence[str] = ()) -> list[Planned]:
    """Each selected run with the state of its folder; every folder the sweep must not touch is
    named in one error."""
    unknown = sorted(set(only) - {r.name for r in sweep.runs})
    if unknown:
        raise LladaptError(f"--only: no run named {', '.join(unknown)} in {sweep.source} "
                           f"(its runs: {', '.join(r.name for r in sweep.runs)})")
    planned, errors = [], []
    for run in sweep.runs:
        if only and run.name not in only:
            continue
        assert run.config is not None
        try:
            planned.append(Planned(run, run_status(run.output_dir, run.config.model_dump(mode="json"))))
        except LladaptError as exc:
            errors.append(str(exc))
    if errors:
        raise LladaptError("\n".join(errors))
    return planned


def _write_json(path: Path, data: Any) -> None:
    make_dirs(path.parent)
    write_json_atomic(path, data, default=str)


def _record(sweep: Sweep, planned: list[Planned], outcomes: list[Outcome]) -> dict[str, Any]:
    by_name = {o.name: o for o in outcomes}
    return {
        "sweep": sweep.source,
        "name": sweep.spec.name,
        "runs": [
            {"name": p.run.name, "output_dir": str(p.run.output_dir), "status_before": p.status,
             "budget": p.run.budget, "resources": p.run.resources.model_dump(),
             "outcome": None if p.run.name not in by_name else {
                 "returncode": by_name[p.run.name].returncode, "seconds": by_name[p.run.name].seconds}}
            for p in planned
        ],
    }


#: the small files of each finished run copied beside the report, so that every number in it can be
#: traced (and the report rebuilt) without the run folders, which hold adapters and checkpoints.
RUN_RECORD_FILES = ("config.json", "results.json", "metrics.jsonl")


def write_combined_report(sweep: Sweep, echo: Callable[[str], None]) -> list[Path]:
    """``lladapt report`` over every run of the sweep that has finished (in grid order), and a
    copy of each one's :data:`RUN_RECORD_FILES` in ``<report>/runs/<run>/``."""
    from lladapt.api import RESULTS_FILE
    from lladapt.evaluation.report import write_report

    finished = [r.output_dir for r in sweep.runs if (r.output_dir / RESULTS_FILE).is_file()]
    if not finished:
        echo("no finished run to report on")
        return []
    charts = importlib.util.find_spec("matplotlib") is not None
    if not charts:
        echo("matplotlib is not installed: the report has tables only (pip install 'lladapt[report]')")
    written = write_report(finished, sweep.report_dir, charts=charts)
    for folder in finished:
        copy = sweep.report_dir / "runs" / folder.name
        make_dirs(copy)
        for name in RUN_RECORD_FILES:
            if (folder / name).is_file():
                write_bytes_atomic(copy / name, (folder / name).read_bytes())
    return written


def run_sweep(
    sweep: Sweep,
    *,
    executor: str = "local",
    only: Sequence[str] = (),
    address: str | None = None,
    echo: Callable[[str], None] = print,
) -> SweepResult:
    """Run what is left of ``sweep`` on ``executor`` (``local`` or ``ray``) and write the report.
    One sweep at a time per ``output_dir`` (its lock, as each run holds its own folder's)."""
    if executor not in EXECUTORS:
        raise LladaptError(f"unknown executor '{executor}' (choose from {', '.join(EXECUTORS)})")
    with locked_folder(sweep.spec.output_dir, what="sweep output_dir", echo=echo):
        return _run_planned(sweep, plan(sweep, only), executor, address, echo)


def _run_planned(sweep: Sweep, planned: list[Planned], executor: str, address: str | None,
                 echo: Callable[[str], None]) -> SweepResult:
    out = sweep.spec.output_dir
    jobs = []
    for item in planned:
        if item.status == "finished":
            echo(f"{item.run.name}: finished, skipped")
            continue
        config_path = out / "configs" / f"{item.run.name}.json"
        _write_json(config_path, item.run.data)
        log_path = out / "logs" / f"{item.run.name}.log"
        make_dirs(log_path.parent)
        resources = item.run.resources
        jobs.append(Job(item.run.name, str(config_path.resolve()), str(log_path.resolve()),
                        resume=item.status == "partial", cwd=str(Path.cwd()),
                        num_cpus=resources.num_cpus, num_gpus=resources.num_gpus))
    result = SweepResult(planned)
    _write_json(out / SWEEP_FILE, _record(sweep, planned, []))
    if jobs:
        result.outcomes = EXECUTORS[executor](jobs, echo, address=address)
    _write_json(out / SWEEP_FILE, _record(sweep, planned, result.outcomes))
    result.report = write_combined_report(sweep, echo)
    return result


def describe_plan(planned: list[Planned]) -> list[dict[str, Any]]:
    """Rows for ``lladapt sweep --dry-run``."""
    rows = []
    for item in planned:
        config = item.run.config
        assert config is not None
        rows.append({
            "run": item.run.name, "status": item.status, "output_dir": str(item.run.output_dir),
            "adapter": config.adapter.name if config.adapter else None,
            "budget": json.dumps(item.run.budget) if item.run.budget else None,
        })
    return rows
