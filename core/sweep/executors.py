"""Where a sweep's runs execute: one after another on this machine (``local``), or as Ray tasks
(``ray``, the optional ``ray`` extra) that a Ray cluster schedules on its machines by the CPUs and
GPUs each run asks for.

Either way a run is the command ``lladapt run CONFIG [--resume]`` in a process of its own (its
memory is returned when it ends; a crash fails that run, not the sweep), its output appended to
``<sweep output_dir>/logs/<run>.log``, started through :mod:`lladapt.cli.sweep_child` so that it does
not outlive the process that started it. On a cluster of several machines the sweep's
folders must be on storage every machine sees at the same path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lladapt.common.errors import LladaptError
from lladapt.common.fileio import writing

__all__ = ["EXECUTORS", "Job", "Outcome", "execute", "run_local", "run_ray"]

RAY_MISSING = "--executor ray needs Ray: pip install 'lladapt[ray]'"


@dataclass(frozen=True)
class Job:
    name: str
    config_path: str
    log_path: str
    resume: bool
    cwd: str
    #: CPUs (also the run's torch threads) and GPUs the run asks for; None: the executor's default.
    num_cpus: float | None = None
    num_gpus: float = 0

    @property
    def threads(self) -> int | None:
        return max(1, int(self.num_cpus)) if self.num_cpus else None


@dataclass(frozen=True)
class Outcome:
    name: str
    returncode: int
    seconds: float
    log_path: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def execute(job: Job) -> Outcome:
    """Run one job to its end in a subprocess; never raises for the run's own failure."""
    # through lladapt.cli.sweep_child: the run stops (checkpoint, exit) when this process dies
    command = [sys.executable, "-m", "lladapt.cli.sweep_child", str(os.getpid()), "run", job.config_path,
               *(["--resume"] if job.resume else [])]
    env = dict(os.environ)
    if job.threads:
        env["OMP_NUM_THREADS"] = str(job.threads)
    started = time.perf_counter()
    with writing(job.log_path):
        log = open(job.log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
    with log:
        returncode = subprocess.call(command, cwd=job.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
    return Outcome(job.name, returncode, round(time.perf_counter() - started, 1), job.log_path)


Report = Callable[[str], None]


def run_local(jobs: Sequence[Job], echo: Report, **_: Any) -> list[Outcome]:
    outcomes = []
    for i, job in enumerate(jobs, 1):
        echo(f"[{i}/{len(jobs)}] {job.name}: {'resuming' if job.resume else 'starting'} (log: {job.log_path})")
        outcomes.append(_said(execute(job), echo))
    return outcomes


def _said(outcome: Outcome, echo: Report) -> Outcome:
    state = "done" if outcome.ok else f"FAILED (exit {outcome.returncode}, see {outcome.log_path})"
    echo(f"{outcome.name}: {state} in {outcome.seconds:.0f} s")
    return outcome


def run_ray(jobs: Sequence[Job], echo: Report, *, address: str | None = None, **_: Any) -> list[Outcome]:
    """Each job a Ray task asking for its ``num_cpus`` (default 1) and ``num_gpus``; connects to
    the cluster at ``address`` (else ``RAY_ADDRESS``, else starts a local instance for the sweep)."""
    try:
        import ray
    except ModuleNotFoundError:
        raise LladaptError(RAY_MISSING) from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    try:
        task = ray.remote(max_retries=0)(execute)
        pending = {task.options(num_cpus=job.num_cpus or 1, num_gpus=job.num_gpus).remote(job): job for job in jobs}
        for job in jobs:
            echo(f"{job.name}: submitted to Ray ({'resume' if job.resume else 'start'}; log: {job.log_path})")
        outcomes: dict[str, Outcome] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    outcomes[job.name] = _said(ray.get(ref), echo)
                except ray.exceptions.RayError as exc:  # the worker died: the run failed, not the sweep
                    echo(f"{job.name}: FAILED in Ray: {exc}")
                    outcomes[job.name] = Outcome(job.name, -1, 0.0, job.log_path)
        return [outcomes[job.name] for job in jobs]
    finally:
        if started_here:
            ray.shutdown()


EXECUTORS: dict[str, Callable[..., list[Outcome]]] = {"local": run_local, "ray": run_ray}
