"""``run(config)``, the run pipeline: a whole run, in four steps a reader can follow top to bottom:

1. **read** (:func:`_read_inputs`): the data read and checked, nothing written yet;
2. **build** (:func:`_build`): the output folder checked, the model loaded with its adapter, the
   training data encoded (everything that can fail on the user's input has failed by now);
3. **train** (:func:`_train`), after the evaluation before training when asked for;
4. **evaluate** and **write** (:func:`_finish`): the evaluation and ``results.json``.

Launched as several processes (``accelerate launch``), every process checks the folder before any
of them writes, the main process alone writes the run's files, and the evaluation shares the
items between the processes (:mod:`lladapt.evaluation.runner`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lladapt.api.build import Built, as_config, build, check_adapter_is_trained
from lladapt.api.echo import Echo, to_stderr
from lladapt.api.run_folder import (
    ADAPTER_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    RESULTS_FILE,
    TRAINED_FILE,
    advising,
    check_output_dir,
    check_resume,
    holding,
    how_to_continue,
    trained_summary,
    write_json,
)
from lladapt.common.errors import LladaptError
from lladapt.common.processes import processes
from lladapt.components.interfaces import Example, PromptTemplate
from lladapt.config import RunConfig

__all__ = ["run"]

@dataclass
class _Inputs:
    """The run's data, read and checked: training and held-out examples, the evaluation sets."""

    examples: list[Example]
    val_examples: list[Example]
    evals: list[Any]  # lladapt.data.loading.LoadedSet
    template: PromptTemplate


@dataclass
class _Run:
    """A run ready to write: its config and folder, the built model, the encoded data."""

    config: RunConfig
    out: Path
    inputs: _Inputs
    built: Built
    encoded: list[Any]
    val_encoded: list[Any]
    resume: bool
    overwrite: bool
    echo: Echo
    #: what ran before an interruption that came after training finished, else None
    trained_before: dict[str, Any] | None = None
    results: dict[str, Any] = field(default_factory=dict)


def run(
    config: str | Path | Mapping[str, Any] | RunConfig,
    overrides: Iterable[str] = (),
    *,
    overwrite: bool = False,
    resume: bool = False,
    evaluate: bool = True,
    echo: Echo = to_stderr,
    command: str | None = None,
) -> dict[str, Any]:
    """Train (if ``data.train`` is set) and evaluate (if ``eval.datasets`` is set); write the
    adapter, logs and ``results.json`` into ``output_dir``. Returns the results.

    ``resume``: continue the run in ``output_dir`` from its newest complete checkpoint (the
    config must not change the recipe). ``evaluate=False``: train only (``lladapt train``).
    ``command``: the command line that started the run (the CLI's), quoted when a failed write
    says how to continue. One process per ``output_dir``: the folder is locked from before the
    model loads to the end (another run there is refused at once, naming it)."""
    config = as_config(config, overrides)
    inputs = _read_inputs(config, evaluate, echo)
    out = Path(config.output_dir)
    with holding(out, echo), advising(lambda: how_to_continue(out, command)):
        state = _build(config, inputs, resume=resume, overwrite=overwrite, echo=echo)
        _start_folder(state)
        _evaluate_before(state, evaluate)
        _train(state)
        return _finish(state, evaluate)


def _read_inputs(config: RunConfig, evaluate: bool, echo: Echo) -> _Inputs:
    """Read and check every data file (each once), before any file is written."""
    from lladapt.data.loading import get_template, load_run_data
    from lladapt.data.overlap import DataOverlapWarning, check_overlap
    from lladapt.evaluation.suite import check_entries
    from lladapt.training import split_validation

    data = load_run_data(config, with_eval=evaluate)
    examples, val_examples = split_validation(
        data.train_examples, config.data.val_set_size, config.train.seed
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataOverlapWarning)
        check_overlap(config, data)
    for warning in caught:
        echo(f"Warning: {warning.message}")
    template = get_template(config.data.template)
    if examples and config.adapter is None:
        raise LladaptError("data.train is set but no adapter is configured: set adapter.name")
    check_adapter_is_trained(config, None, bool(examples))
    check_entries(config, data.eval)
    return _Inputs(examples, val_examples, data.eval, template)


def _build(config: RunConfig, inputs: _Inputs, *, resume: bool, overwrite: bool, echo: Echo) -> _Run:
    """Check the output folder, load the model with its adapter (the saved one when a resumed
    run's training had finished) and encode the training data; still nothing written."""
    from transformers import set_seed

    out = Path(config.output_dir)
    if resume:
        check_resume(out, config)
    else:
        check_output_dir(out, overwrite)
    trained_before = trained_summary(out) if resume and inputs.examples else None
    processes().wait()  # every process has checked the folder before the main one writes to it
    echo(f"loading {config.model.source}")
    set_seed(config.train.seed)  # adapter initialisation is part of the run's reproducibility
    built = build(config, out / ADAPTER_DIR if trained_before is not None else None)
    encode = _encoder(config, built, inputs.template)
    return _Run(config, out, inputs, built, encode(inputs.examples), encode(inputs.val_examples),
                resume, overwrite, echo, trained_before)


def _encoder(config: RunConfig, built: Built, template: PromptTemplate) -> Callable[[list[Any]], list[Any]]:
    from lladapt.data.tokenization import encode_for_training

    def encode(items: list[Any]) -> list[Any]:
        return [
            encode_for_training(
                built.loaded.tokenizer, template, ex, cutoff_len=config.data.cutoff_len,
                train_on_inputs=config.data.train_on_inputs, add_eos=config.data.add_eos,
            )
            for ex in items
        ]

    return encode


def _start_folder(state: _Run) -> None:
    """The first writes: the folder, the run's config, and the results' head."""
    config, out = state.config, state.out
    if processes().main:
        out.mkdir(parents=True, exist_ok=True)
        if not state.resume:  # an overwritten run's summary must not pass for this run's
            (out / TRAINED_FILE).unlink(missing_ok=True)
        write_json(out / CONFIG_FILE, config.model_dump(mode="json"))
    processes().wait()
    state.results = {"model": config.model.source, "adapter": None, "train": None, "eval": []}
    if config.adapter is not None:
        state.results["adapter"] = {
            "name": config.adapter.name,
            "trainable_parameters": state.built.model.num_parameters(trainable_only=True),
        }


def _evaluate_before(state: _Run, evaluate: bool) -> None:
    """The evaluation before training (``eval.before_training``), or, for a resumed run whose
    training had finished, what it recorded then."""
    from lladapt.evaluation.suite import EVAL_BEFORE_DIR, evaluate_all

    if state.trained_before is not None:  # what ran before the interruption, as it was then
        state.echo(f"training finished before the interruption: evaluating {state.out / ADAPTER_DIR}")
        state.results.update(state.trained_before)
    elif state.encoded and evaluate and state.config.eval.before_training:
        state.results["eval_before"] = evaluate_all(
            state.built.model, state.built.loaded.tokenizer, state.config, state.inputs.evals,
            state.out, echo=state.echo, fresh=not state.resume, eval_dir=EVAL_BEFORE_DIR)


def _train(state: _Run) -> None:
    """Train, save the final adapter, and record the training summary (``trained.json``)."""
    if not state.encoded or state.trained_before is not None:
        return
    from lladapt.components.plugin_manager import get_registry
    from lladapt.training import train
    from lladapt.training.progress import train_summary

    config, out, model = state.config, state.out, state.built.model
    lr = config.train.learning_rate or get_registry("adapter").get(config.adapter.name).default_learning_rate
    held_out = f" ({len(state.val_encoded)} held out)" if state.val_encoded else ""
    state.echo(f"training on {len(state.encoded)} examples{held_out}, lr {lr}")
    trained = train(
        model, state.encoded, config.train, learning_rate=lr,
        pad_token_id=state.built.loaded.tokenizer.pad_token_id,
        save=lambda path: model.save_adapter(path, overwrite=True),
        checkpoint_dir=out / "checkpoints", metrics=out / METRICS_FILE, echo=state.echo,
        val_encoded=state.val_encoded, resume=state.resume, run_config=config.model_dump(mode="json"),
        tracker_dir=out / "trackers",
    )
    if processes().main:
        model.save_adapter(out / ADAPTER_DIR, overwrite=state.overwrite or state.resume)
    state.results["train"] = {
        "examples": len(state.encoded), "validation_examples": len(state.val_encoded),
        "steps": trained.steps, "epochs": round(trained.epochs, 4), "first_loss": trained.first_loss,
        "final_loss": trained.final_loss, "seconds": round(trained.seconds, 2),
        "padded_share": round(trained.padded_share, 4), "compile_seconds": round(trained.compile_seconds, 2),
        "val_loss": trained.val_losses[-1][1] if trained.val_losses else None,
        "best_step": trained.best_step, "resumed_from": trained.resumed_from,
    }
    if processes().main:
        write_json(out / TRAINED_FILE, {k: state.results[k] for k in ("train", "eval_before") if k in state.results})
        state.echo(train_summary(state.results, trained, out / ADAPTER_DIR))
    processes().wait()


def _finish(state: _Run, evaluate: bool) -> dict[str, Any]:
    """Evaluate (unless training only), print the accuracy table, write ``results.json``."""
    from lladapt.evaluation.suite import evaluate_all
    from lladapt.training.progress import accuracy_table

    results = state.results
    if evaluate:
        results["eval"] = evaluate_all(state.built.model, state.built.loaded.tokenizer, state.config,
                                       state.inputs.evals, state.out, echo=state.echo, fresh=not state.resume)
    if processes().main:
        if results["eval"]:
            state.echo(accuracy_table(results))
        write_json(state.out / RESULTS_FILE, results)
    return results
