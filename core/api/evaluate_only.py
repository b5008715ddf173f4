"""``evaluate(config)``: a base model, or a base with a saved adapter, evaluated without training
(``lladapt eval``); predictions resume from the run folder."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lladapt.api.build import as_config, build, check_adapter_is_trained
from lladapt.api.echo import Echo, to_stderr
from lladapt.api.run_folder import EVAL_ADVICE, RESULTS_FILE, advising, holding, write_json
from lladapt.common.errors import LladaptError
from lladapt.common.processes import processes
from lladapt.config import RunConfig

__all__ = ["evaluate"]


def evaluate(
    config: str | Path | Mapping[str, Any] | RunConfig,
    overrides: Iterable[str] = (),
    *,
    adapter: str | Path | None = None,
    echo: Echo = to_stderr,
    progress: Any = None,
) -> dict[str, Any]:
    """Evaluate a base model, or a base with a saved adapter (``adapter``, else ``adapter.path``),
    on ``eval.datasets`` without training; predictions go to ``<output_dir>/eval/`` and are
    resumed from there (finished items are not recomputed). Writes and returns ``results.json``
    (a training summary already in it is kept). Under ``accelerate launch`` the processes share
    the items, and write one predictions file and one ``results.json``, as one process would."""
    from lladapt.data.loading import eval_sets
    from lladapt.evaluation.suite import check_entries

    config = as_config(config, overrides)
    if not config.eval.datasets:
        raise LladaptError("nothing to evaluate: set eval.datasets")
    check_adapter_is_trained(config, adapter, False)
    evals = eval_sets(config)
    check_entries(config, evals)
    out = Path(config.output_dir)
    with holding(out, echo), advising(lambda: EVAL_ADVICE):
        return _evaluate(config, adapter, evals, out, echo, progress)


def _evaluate(config: RunConfig, adapter: str | Path | None, evals: list[Any], out: Path, echo: Echo,
              progress: Any) -> dict[str, Any]:
    """Load, evaluate, write ``results.json`` (the folder is locked by now)."""
    from transformers import set_seed

    from lladapt.evaluation.suite import evaluate_all

    echo(f"loading {config.model.source}")
    set_seed(config.train.seed)  # an untrained adapter's initial weights
    built = build(config, adapter, echo=echo)
    results_path = out / RESULTS_FILE
    try:
        results = json.loads(results_path.read_text(encoding="utf-8")) if results_path.is_file() else {}
    except json.JSONDecodeError:
        results = {}
    results.update({"model": config.model.source, "adapter": _adapter_summary(built.model, adapter or (
        config.adapter.path if config.adapter else None))})
    results.setdefault("train", None)
    results["eval"] = evaluate_all(built.model, built.loaded.tokenizer, config, evals, out,
                                   echo=echo, progress=progress)
    if processes().main:  # several processes share the items; the main one writes
        write_json(results_path, results)
    return results


def _adapter_summary(model: Any, path: str | Path | None) -> dict[str, Any] | None:
    adapter = getattr(model, "adapter", None)
    if adapter is None:
        return None
    return {"name": adapter.name, "path": str(path) if path else None,
            "trainable_parameters": model.num_parameters(trainable_only=True)}
