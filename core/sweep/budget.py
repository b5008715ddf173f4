"""Trainable-parameter budgets: size each run's adapter so that all land near one count.

An adapter names the option that sizes it in its ``size_option`` class attribute (LoRA ``r``, the
bottleneck adapters ``bottleneck_size``, prompt learning ``num_virtual_tokens``); a sweep's
``budget.options`` names it for adapters that do not. The trainable count is computed on the meta
device (no weights loaded) and is non-decreasing in the size, so the nearest size is found by
doubling, then bisection: about 2 log2(size) counts per adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lladapt.common.errors import ConfigError, ErrorItem
from lladapt.sweep.merge import merge

if TYPE_CHECKING:  # pragma: no cover
    from lladapt.sweep.spec import PlannedRun, Sweep

__all__ = ["match_budgets", "nearest_size"]


def nearest_size(count: Callable[[int], int], target: int, max_size: int) -> int:
    """The size in ``1..max_size`` whose ``count`` is nearest ``target`` (the smaller size on a
    tie), for a ``count`` that does not decrease with the size."""
    high = 1
    while count(high) < target and high < max_size:
        high = min(2 * high, max_size)
    low = max(1, high // 2)
    while low < high:  # the smallest size whose count reaches the target
        mid = (low + high) // 2
        if count(mid) < target:
            low = mid + 1
        else:
            high = mid
    if high > 1 and target - count(high - 1) <= count(high) - target:
        return high - 1
    return high


def _size_option(run: PlannedRun, options: dict[str, str]) -> str | None:
    from lladapt.components.plugin_manager import get_registry

    assert run.config is not None and run.config.adapter is not None
    name = run.config.adapter.name
    cls = get_registry("adapter").get(name)
    return options.get(name) or options.get(cls.name) or getattr(cls, "size_option", None)


def _match(run: PlannedRun, option: str, target: int, max_size: int) -> None:
    from lladapt.adapters.meta_check import count_parameters
    from lladapt.config import load_config

    counts: dict[int, int] = {}

    def count(size: int) -> int:
        if size not in counts:
            config = load_config(merge(run.data, {"adapter": {option: size}}))
            counts[size] = count_parameters(config)["trainable"]
        return counts[size]

    size = nearest_size(count, target, max_size)
    run.data = merge(run.data, {"adapter": {option: size}})
    run.config = load_config(run.data)
    run.budget = {"option": f"adapter.{option}", "value": size, "trainable": count(size), "target": target}


def match_budgets(sweep: Sweep) -> None:
    """Set every adapter run's size option for ``sweep.spec.budget`` (runs without an adapter are
    left alone). An adapter with no size option is a :class:`ConfigError` naming the run."""
    budget = sweep.spec.budget
    assert budget is not None
    errors = []
    for run in sweep.runs:
        if run.config is None or run.config.adapter is None:
            continue
        option = _size_option(run, budget.options)
        if option is None:
            errors.append(ErrorItem(
                f"{run.name}.adapter", f"adapter '{run.config.adapter.name}' declares no size option to "
                "match the budget with: name one in budget.options (e.g. {" + run.config.adapter.name + ": rank})"))
            continue
        try:
            _match(run, option, budget.trainable, budget.max_size)
        except ConfigError as exc:
            errors += [ErrorItem(f"{run.name}.{e.path}" if e.path else run.name, f"budget: {e.message}") for e in exc.errors]
    if errors:
        raise ConfigError(errors, source=sweep.source)
