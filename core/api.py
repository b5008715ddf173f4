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

from lladapt.config import DatasetRef, RunConfig, load_config
from lladapt.errors import LladaptError
from lladapt.interfaces import Example

if TYPE_CHECKING:  # pragma: no cover
    from lladapt.models import LoadedModel

Echo = Callable[[str], None]

#: files a run writes into its output folder.
RESULTS_FILE = "results.json"
CONFIG_FILE = "config.json"
ADAPTER_DIR = "adapter"


@dataclass
class Built:
    """A loaded base model with its adapter attached."""

    loaded: LoadedModel
    model: Any  # lladapt.adapt.AdaptedModel, or the bare base model when no adapter is set


def as_config(config: str | Path | Mapping[str, Any] | RunConfig, overrides: Iterable[str] = ()) -> RunConfig:
    if isinstance(config, RunConfig) and not overrides:
        return config
    return load_config(config, overrides)


def build(config: RunConfig) -> Built:
    """Load the base model and tokenizer, attach the configured adapter (base frozen)."""
    from lladapt.models import load_model

    loaded = load_model(config.model)
    model = loaded.model
    if config.adapter is not None:
        from lladapt.adapt import attach_from_config

        model = attach_from_config(model, loaded.layout, config.adapter, config.placement)
    return Built(loaded, model)


def _component(kind: str, name: str, options=None):
    from lladapt.plugin_manager import get_registry

    cls = get_registry(kind).get(name)
    return cls(options) if options is not None else cls()


def load_examples(ref: DatasetRef, split: str, data_dir: Path | None) -> list[Example]:
    """The examples of a dataset reference (its split, limit and own options)."""
    from lladapt.data import load_examples as _load

    return _load(ref, split=ref.split or split, data_dir=data_dir)


def _prepare_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse to mix two runs' files: an output folder holding another run needs ``overwrite``."""
    if path.exists() and not path.is_dir():
        raise LladaptError(f"output_dir '{path}' exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise LladaptError(
            f"output_dir '{path}' already holds files (another run's?); choose another "
            "output_dir or pass --overwrite"
        )
    path.mkdir(parents=True, exist_ok=True)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(
    config: str | Path | Mapping[str, Any] | RunConfig,
    overrides: Iterable[str] = (),
    *,
    overwrite: bool = False,
    echo: Echo = _stderr,
) -> dict[str, Any]:
    """Train (if ``data.train`` is set) and evaluate (if ``eval.datasets`` is set); write the
    adapter, logs and ``results.json`` into ``output_dir``. Returns the results."""
    from lladapt.evaluation import evaluate_dataset, write_predictions
    from lladapt.tokenization import encode_for_training
    from lladapt.training import jsonl_logger, train

    config = as_config(config, overrides)
    data_dir = config.data.data_dir
    # Everything that can fail on the user's input fails here, before a file is written.
    train_sets = [(ref, load_examples(ref, "train", data_dir)) for ref in config.data.train]
    eval_sets = [(ref, load_examples(ref, config.eval.split, data_dir)) for ref in config.eval.datasets]
    if config.eval.limit:
        eval_sets = [(ref, ex[: config.eval.limit]) for ref, ex in eval_sets]
    if train_sets and eval_sets and config.data.overlap != "ignore":
        from lladapt.overlap import report_overlap

        report_overlap(train_sets, eval_sets, mode=config.data.overlap, echo=echo)
    template = _component("prompt_template", config.data.template)
    if train_sets and config.adapter is None:
        raise LladaptError("data.train is set but no adapter is configured: set adapter.name")

    out = Path(config.output_dir)
    _prepare_output_dir(out, overwrite)
    _write_json(out / CONFIG_FILE, config.model_dump(mode="json"))
    echo(f"loading {config.model.source}")
    built = build(config)
    tokenizer = built.loaded.tokenizer
    results: dict[str, Any] = {"model": config.model.source, "adapter": None, "train": None, "eval": []}
    if config.adapter is not None:
        adapter_cls = _component("adapter", config.adapter.name, config.adapter.options)
        results["adapter"] = {
            "name": config.adapter.name,
            "trainable_parameters": sum(p.numel() for p in built.model.parameters() if p.requires_grad),
        }
    if train_sets:
        encoded = [
            encode_for_training(
                tokenizer, template, ex, cutoff_len=config.data.cutoff_len,
                train_on_inputs=config.data.train_on_inputs, add_eos=config.data.add_eos,
            )
            for _, examples in train_sets
            for ex in examples
        ]
        lr = config.train.learning_rate or adapter_cls.default_learning_rate
        echo(f"training on {len(encoded)} examples, lr {lr}")
        trained = train(
            built.model, encoded, config.train, learning_rate=lr,
            pad_token_id=tokenizer.pad_token_id,
            save=built.model.save_adapter, checkpoint_dir=out / "checkpoints",
            log=jsonl_logger(out / "train_log.jsonl", echo=lambda r: echo(json.dumps(r))),
        )
        built.model.save_adapter(out / ADAPTER_DIR)
        results["train"] = {
            "examples": len(encoded), "steps": trained.steps, "epochs": round(trained.epochs, 4),
            "first_loss": trained.first_loss, "final_loss": trained.final_loss,
            "seconds": round(trained.seconds, 2),
        }
    for ref, examples in eval_sets:
        dataset = _component("dataset", ref.name, ref.options)
        parser = _component("answer_parser", config.eval.parser or dataset.parser)
        echo(f"evaluating {ref.name}: {len(examples)} examples")
        scored = evaluate_dataset(
            built.model, tokenizer, template, ref.name, examples, parser,
            max_new_tokens=config.eval.max_new_tokens or dataset.max_new_tokens,
            batch_size=config.eval.batch_size, num_beams=config.eval.num_beams,
        )
        write_predictions(out / "eval" / f"{ref.name}.jsonl", scored)
        results["eval"].append(scored.summary())
        echo(json.dumps(scored.summary()))
    _write_json(out / RESULTS_FILE, results)
    return results
