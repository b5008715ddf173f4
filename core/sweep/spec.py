"""A sweep file (``lladapt sweep SWEEP.yaml``) and its expansion into runs.

A sweep is a base run config and a grid. Each grid axis is either

* a dotted config key with a list of values (``train.seed: [1, 2]``), or
* a name with named variants, each a config fragment merged into the base (a ``resources`` key
  in a fragment is not config: it updates what that variant's runs ask of the executor)
  (``adapter: {lora: {adapter: {name: lora, r: 8}}, series: {...}}``; ``null`` removes a
  section, lists replace lists, mappings merge key by key, a section naming another component
  replaces the base's; keys inside a fragment may be dotted).

The runs are the product of the axes, in file order. A run's name joins, for every axis with more
than one choice, the variant's name or ``<last key part>-<value>``; its folder is
``<output_dir>/<name>``. Every run config is validated before anything runs.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError

from lladapt.common.errors import ConfigError, ErrorItem
from lladapt.config import RunConfig, errors_from_validation, load_config, read_config_file
from lladapt.sweep.budget import match_budgets
from lladapt.sweep.merge import merge

__all__ = ["PlannedRun", "Sweep", "SweepFile", "expand", "load_sweep", "merge"]


class Resources(BaseModel):
    """What one run asks of the executor (Ray schedules on it; locally ``num_cpus`` sets the
    run's torch threads)."""

    model_config = ConfigDict(extra="forbid")
    num_cpus: PositiveFloat | None = None
    num_gpus: float = Field(default=0, ge=0)


class Budget(BaseModel):
    """Match trainable-parameter counts across adapters: each adapter's size option (its
    ``size_option``, or ``options[adapter]``) is set to the value whose count is nearest
    ``trainable``."""

    model_config = ConfigDict(extra="forbid")
    trainable: PositiveInt
    options: dict[str, str] = Field(default_factory=dict)
    max_size: PositiveInt = 65536


class SweepFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    #: each run goes to ``<output_dir>/<run name>``.
    output_dir: Path
    #: the run config every run starts from: a mapping, or a config file (relative to the sweep file).
    base: dict[str, Any] | Path = Field(default_factory=dict)
    grid: dict[str, list[Any] | dict[str, dict[str, Any] | None]] = Field(default_factory=dict)
    budget: Budget | None = None
    resources: Resources = Field(default_factory=Resources)
    #: where the combined report goes (default ``<output_dir>/report``).
    report: Path | None = None


@dataclass
class PlannedRun:
    name: str
    #: the run's config as plain data (``output_dir`` set to the run's folder).
    data: dict[str, Any]
    config: RunConfig | None = None
    #: budget matching: ``{"option": "adapter.r", "value": 12, "trainable": 1_010_000}``.
    budget: dict[str, Any] | None = None
    #: what the run asks of the executor: the sweep's ``resources``, updated by its variants'.
    resources: Resources = field(default_factory=lambda: Resources())

    @property
    def output_dir(self) -> Path:
        return Path(self.data["output_dir"])


@dataclass
class Sweep:
    source: str
    spec: SweepFile
    runs: list[PlannedRun] = field(default_factory=list)

    @property
    def report_dir(self) -> Path:
        return self.spec.report or self.spec.output_dir / "report"


def _slug(value: Any) -> str:
    text = re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value)).strip("-")
    return text or "x"


@dataclass(frozen=True)
class _Choice:
    label: str
    fragment: dict[str, Any]


def _axis_choices(axis: str, values: list[Any] | dict[str, Any]) -> list[_Choice]:
    if isinstance(values, dict):
        return [_Choice(_slug(name), dict(fragment or {})) for name, fragment in values.items()]
    last = axis.split(".")[-1]
    scalar = all(isinstance(v, (str, int, float, bool)) or v is None for v in values)
    return [
        _Choice(f"{_slug(last)}-{_slug(v) if scalar else i}", {axis: v}) for i, v in enumerate(values)
    ]


def expand(spec: SweepFile, base: Mapping[str, Any]) -> list[PlannedRun]:
    """Every run of the grid, named, with its config data (not yet validated)."""
    axes = [(axis, _axis_choices(axis, values)) for axis, values in spec.grid.items()]
    runs = []
    for combo in itertools.product(*(choices for _, choices in axes)):
        data = dict(base)
        labels = []
        resources = spec.resources.model_dump()
        for (_, choices), choice in zip(axes, combo, strict=True):
            fragment = dict(choice.fragment)
            resources.update(fragment.pop(RESOURCES_KEY, None) or {})
            data = merge(data, fragment)
            if len(choices) > 1:
                labels.append(choice.label)
        name = "_".join(labels) or (combo[0].label if combo else "run")
        data["output_dir"] = str(spec.output_dir / name)
        runs.append(PlannedRun(name, data, resources=_resources(name, resources)))
    return runs


#: a variant's key for the resources its runs ask for (not part of the run config).
RESOURCES_KEY = "resources"


def _resources(name: str, values: dict[str, Any]) -> Resources:
    try:
        return Resources.model_validate(values)
    except ValidationError as exc:
        raise ConfigError([ErrorItem(f"{name}.resources.{e.path}", e.message)
                           for e in errors_from_validation(exc, Resources)]) from None


def _read_spec(path: Path) -> SweepFile:
    data = read_config_file(path)
    try:
        return SweepFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(errors_from_validation(exc, SweepFile), source=str(path)) from None


def _base(spec: SweepFile, path: Path) -> dict[str, Any]:
    if isinstance(spec.base, dict):
        return spec.base
    base_path = spec.base if spec.base.is_absolute() else path.parent / spec.base
    return read_config_file(base_path)


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> Sweep:
    """Read, expand and validate a sweep file: a :class:`ConfigError` lists every invalid run
    (under ``<run name>.<dotted key>``) before anything runs. ``overrides`` (``key=value``) apply
    to every run."""
    from lladapt.config import apply_overrides

    path = Path(path)
    spec = _read_spec(path)
    base = _base(spec, path)
    try:
        runs = expand(spec, base)
    except ConfigError as exc:
        raise ConfigError(exc.errors, source=str(path)) from None
    names = [r.name for r in runs]
    errors = [ErrorItem("grid", f"two runs are both named '{n}'") for n in sorted({n for n in names if names.count(n) > 1})]
    if not runs:
        errors.append(ErrorItem("grid", "the grid expands to no runs"))
    for run in runs:
        if overrides:
            run.data = apply_overrides(run.data, overrides)
            run.data["output_dir"] = str(spec.output_dir / run.name)
        try:
            run.config = load_config(run.data)
        except ConfigError as exc:
            errors += [ErrorItem(f"{run.name}.{e.path}" if e.path else run.name, e.message) for e in exc.errors]
    if errors:
        raise ConfigError(errors, source=str(path))
    sweep = Sweep(str(path), spec, runs)
    if spec.budget is not None:
        match_budgets(sweep)
    return sweep
