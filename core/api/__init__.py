"""The Python API the CLI wraps: ``run(config)`` = load model -> attach adapter -> data ->
train -> evaluate -> results files. Each step is a plain function of the step before.

>>> from lladapt.api import run
>>> results = run("examples/quickstart.yaml", overrides=["train.max_steps=10"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lladapt.common.errors import LladaptError
from lladapt.config import RunConfig, load_config

if TYPE_CHECKING:  # pragma: no cover
    from lladapt.models.loading import LoadedModel

Echo = Callable[[str], None]

#: files a run writes into its output folder.
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
ADAPTER_DIR = "adapter"
#: the training summary, written once the final adapter is saved: a resumed run that finds it
#: evaluates that adapter instead of training again.
TRAINED_FILE = "trained.json"


@dataclass
class Built:
    """A loaded base model with its adapter attached."""

    loaded: LoadedModel
    model: Any  # lladapt.adapters.model.AdaptedModel, or the bare base model when no adapter is set


def as_config(config: str | Path | Mapping[str, Any] | RunConfig, overrides: Iterable[str] = ()) -> RunConfig:
    if isinstance(config, RunConfig) and not overrides:
        return config
    return load_config(config, overrides)


def build(config: RunConfig, adapter_dir: str | Path | None = None) -> Built:
    """Load the base model and tokenizer, attach the configured adapter (base frozen); with
    ``adapter_dir`` (else ``adapter.path``), load the adapter saved there (lladapt's or PEFT's)."""
    from lladapt.models.loading import load_model

    loaded = load_model(config.model)
    model = loaded.model
    adapter_dir = adapter_dir or (config.adapter.path if config.adapter is not None else None)
    if adapter_dir is not None:
        from lladapt.adapters.model import load_adapter

        model = load_adapter(model, loaded.layout, _adapter_folder(adapter_dir))
    elif config.adapter is not None:
        from lladapt.adapters.model import attach_from_config

        model = attach_from_config(model, loaded.layout, config.adapter, config.placement)
    return Built(loaded, model)


def _adapter_folder(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise LladaptError(f"adapter folder '{path}' does not exist (--adapter / adapter.path)")
    return path


def _check_adapter_is_trained(config: RunConfig, adapter_dir: str | Path | None, training: bool) -> None:
    """Evaluating an adapter means evaluating trained weights, unless the user asks otherwise."""
    if (config.adapter is None or training or adapter_dir is not None or config.adapter.path is not None
            or config.eval.untrained_adapter or not config.eval.datasets):
        return
    raise LladaptError(
        f"adapter '{config.adapter.name}' would be evaluated with its initial (untrained) weights: "
        "pass --adapter DIR (or set adapter.path) to evaluate a trained adapter, set data.train to "
        "train one first, or set eval.untrained_adapter=true (lladapt eval --untrained-adapter) to "
        "evaluate it untrained on purpose"
    )


def _check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse to mix two runs' files: an output folder holding another run needs ``overwrite``."""
    if path.exists() and not path.is_dir():
        raise LladaptError(f"output_dir '{path}' exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise LladaptError(
            f"output_dir '{path}' already holds files (another run's?); choose another "
            "output_dir or pass --overwrite"
        )


def _check_resume(path: Path, config: RunConfig) -> None:
    """A resumed run continues the run in ``path``: same recipe, or a refusal naming the keys."""
    from lladapt.training.checkpoints import recipe_differences

    saved = path / CONFIG_FILE
    if not saved.is_file():
        raise LladaptError(f"cannot resume: {saved} does not exist (no run was started in output_dir '{path}')")
    differences = recipe_differences(json.loads(saved.read_text(encoding="utf-8")), config.model_dump(mode="json"))
    if differences:
        raise LladaptError(
            f"cannot resume the run in '{path}': the config changes its recipe:\n  "
            + "\n  ".join(differences)
            + "\nstart a new run (another output_dir) instead"
        )


def _trained_summary(out: Path) -> dict[str, Any] | None:
    """``{"train": ..., "eval_before": ...}`` of a run whose training finished (its final adapter
    is saved), else None."""
    path = out / TRAINED_FILE
    if not (path.is_file() and (out / ADAPTER_DIR).is_dir()):
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LladaptError(f"{path}: not valid JSON ({exc.msg}); remove it to train again") from None


def _write_json(path: Path, data: Any) -> None:
    from lladapt.common.fileio import write_json_atomic

    write_json_atomic(path, data, default=str)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(
    config: str | Path | Mapping[str, Any] | RunConfig,
    overrides: Iterable[str] = (),
    *,
    overwrite: bool = False,
    resume: bool = False,
    evaluate: bool = True,
    echo: Echo = _stderr,
) -> dict[str, Any]:
    """Train (if ``data.train`` is set) and evaluate (if ``eval.datasets`` is set); write the
    adapter, logs and ``results.json`` into ``output_dir``. Returns the results.

    ``resume``: continue the run in ``output_dir`` from its newest complete checkpoint (the
    config must not change the recipe). ``evaluate=False``: train only (``lladapt train``)."""
    import warnings

    from lladapt.components.plugin_manager import get_registry
    from lladapt.data.loading import get_template, load_run_data
    from lladapt.data.overlap import DataOverlapWarning, check_overlap
    from lladapt.data.tokenization import encode_for_training
    from lladapt.evaluation.suite import EVAL_BEFORE_DIR, check_entries, evaluate_all
    from lladapt.training import split_validation, train
    from lladapt.training.progress import accuracy_table, train_summary

    config = as_config(config, overrides)
    # Everything that can fail on the user's input fails here, before a file is written; each
    # data file is read once.
    data = load_run_data(config, with_eval=evaluate)
    examples, val_examples = split_validation(
        data.train_examples, config.data.val_set_size, config.train.seed
    )
    evals = data.eval
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataOverlapWarning)
        check_overlap(config, data)
    for warning in caught:
        echo(f"Warning: {warning.message}")
    template = get_template(config.data.template)
    if examples and config.adapter is None:
        raise LladaptError("data.train is set but no adapter is configured: set adapter.name")
    _check_adapter_is_trained(config, None, bool(examples))
    check_entries(config, evals)

    out = Path(config.output_dir)
    if resume:
        _check_resume(out, config)
    else:
        _check_output_dir(out, overwrite)
    trained_before = _trained_summary(out) if resume and examples else None
    echo(f"loading {config.model.source}")
    from transformers import set_seed

    set_seed(config.train.seed)  # adapter initialisation is part of the run's reproducibility
    built = build(config, out / ADAPTER_DIR if trained_before is not None else None)
    tokenizer = built.loaded.tokenizer

    def encode(items: list[Any]) -> list[Any]:
        return [
            encode_for_training(
                tokenizer, template, ex, cutoff_len=config.data.cutoff_len,
                train_on_inputs=config.data.train_on_inputs, add_eos=config.data.add_eos,
            )
            for ex in items
        ]

    encoded, val_encoded = encode(examples), encode(val_examples)  # fails before a file is written
    out.mkdir(parents=True, exist_ok=True)
    if not resume:  # an overwritten run's summary must not pass for this run's
        (out / TRAINED_FILE).unlink(missing_ok=True)
    _write_json(out / CONFIG_FILE, config.model_dump(mode="json"))
    results: dict[str, Any] = {"model": config.model.source, "adapter": None, "train": None, "eval": []}
    if config.adapter is not None:
        adapter_cls = get_registry("adapter").get(config.adapter.name)
        results["adapter"] = {
            "name": config.adapter.name,
            "trainable_parameters": built.model.num_parameters(trainable_only=True),
        }
    if trained_before is not None:  # what ran before the interruption, as it was then
        echo(f"training finished before the interruption: evaluating {out / ADAPTER_DIR}")
        results.update(trained_before)
    elif encoded and evaluate and config.eval.before_training:
        results["eval_before"] = evaluate_all(built.model, tokenizer, config, evals, out, echo=echo,
                                              fresh=not resume, eval_dir=EVAL_BEFORE_DIR)
    if encoded and trained_before is None:
        lr = config.train.learning_rate or adapter_cls.default_learning_rate
        echo(f"training on {len(encoded)} examples" + (f" ({len(val_encoded)} held out)" if val_encoded else "") + f", lr {lr}")
        trained = train(
            built.model, encoded, config.train, learning_rate=lr,
            pad_token_id=tokenizer.pad_token_id,
            save=lambda path: built.model.save_adapter(path, overwrite=True),
            checkpoint_dir=out / "checkpoints", metrics=out / METRICS_FILE, echo=echo,
            val_encoded=val_encoded, resume=resume, run_config=config.model_dump(mode="json"),
            tracker_dir=out / "trackers",
        )
        built.model.save_adapter(out / ADAPTER_DIR, overwrite=overwrite or resume)
        results["train"] = {
            "examples": len(encoded), "validation_examples": len(val_encoded), "steps": trained.steps,
            "epochs": round(trained.epochs, 4), "first_loss": trained.first_loss,
            "final_loss": trained.final_loss, "seconds": round(trained.seconds, 2),
            "padded_share": round(trained.padded_share, 4),
            "val_loss": trained.val_losses[-1][1] if trained.val_losses else None,
            "best_step": trained.best_step, "resumed_from": trained.resumed_from,
        }
        _write_json(out / TRAINED_FILE, {k: results[k] for k in ("train", "eval_before") if k in results})
        echo(train_summary(results, trained, out / ADAPTER_DIR))
    if evaluate:
        results["eval"] = evaluate_all(built.model, tokenizer, config, evals, out, echo=echo, fresh=not resume)
    if results["eval"]:
        echo(accuracy_table(results))
    _write_json(out / RESULTS_FILE, results)
    return results


def evaluate(
    config: str | Path | Mapping[str, Any] | RunConfig,
    overrides: Iterable[str] = (),
    *,
    adapter: str | Path | None = None,
    echo: Echo = _stderr,
    progress: Any = None,
) -> dict[str, Any]:
    """Evaluate a base model, or a base with a saved adapter (``adapter``, else ``adapter.path``),
    on ``eval.datasets`` without training; predictions go to ``<output_dir>/eval/`` and are
    resumed from there (finished items are not recomputed). Writes and returns ``results.json``
    (a training summary already in it is kept)."""
    from lladapt.data.loading import eval_sets
    from lladapt.evaluation.suite import check_entries, evaluate_all

    config = as_config(config, overrides)
    if not config.eval.datasets:
        raise LladaptError("nothing to evaluate: set eval.datasets")
    _check_adapter_is_trained(config, adapter, False)
    evals = eval_sets(config)
    check_entries(config, evals)
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise LladaptError(f"output_dir '{out}' exists and is not a folder")
    echo(f"loading {config.model.source}")
    from transformers import set_seed

    set_seed(config.train.seed)  # an untrained adapter's initial weights
    built = build(config, adapter)
    out.mkdir(parents=True, exist_ok=True)
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
    _write_json(results_path, results)
    return results


def _adapter_summary(model: Any, path: str | Path | None) -> dict[str, Any] | None:
    adapter = getattr(model, "adapter", None)
    if adapter is None:
        return None
    return {"name": adapter.name, "path": str(path) if path else None,
            "trainable_parameters": model.num_parameters(trainable_only=True)}
