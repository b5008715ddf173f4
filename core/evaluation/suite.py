"""Every evaluation entry of a run config, one after the other, into ``<output_dir>/eval/``:
the config's ``eval`` section becomes an :class:`Evaluation`, each ``eval.datasets`` item an
:class:`Entry` with its own predictions file (resumed when it is there)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lladapt.common.processes import processes
from lladapt.evaluation.generation import Decoding
from lladapt.evaluation.progress import Progress, default_progress
from lladapt.evaluation.runner import (
    Entry,
    Evaluation,
    adapter_identity,
    entry_labels,
    evaluate_entries,
    prepared,
)
from lladapt.evaluation.store import PredictionStore

if TYPE_CHECKING:  # pragma: no cover
    from lladapt.config import RunConfig
    from lladapt.data.loading import LoadedSet

EVAL_DIR = "eval"
#: where a run's evaluation of the untrained model (``eval.before_training``) goes.
EVAL_BEFORE_DIR = "eval-before"


def evaluation_for(config: RunConfig, max_new_tokens: int) -> Evaluation:
    """The config's ``eval`` section as an :class:`Evaluation` for one dataset."""
    section = config.eval
    tokens = section.max_new_tokens or max_new_tokens
    if section.protocol == "paper":
        decoding = Decoding.paper(tokens, stop=section.stop)
    else:
        decoding = Decoding(max_new_tokens=tokens, num_beams=section.num_beams,
                            batch_size=section.batch_size, stop=tuple(section.stop))
    return Evaluation(decoding, scoring=section.scoring, length_normalize=section.length_normalize,
                      pack_weights=section.pack_weights)


def entries_for(config: RunConfig, sets: list[LoadedSet]) -> list[Entry]:
    from lladapt.data.loading import make_parser

    labels = entry_labels([(s.name, s.split) for s in sets])
    return [
        Entry(label, s.name, s.split, s.dataset, s.examples, make_parser(s.dataset, config.eval.parser),
              options=ref.component_fields() | ({"limit": ref.limit} if ref.limit else {}))
        for label, s, ref in zip(labels, sets, config.eval.datasets, strict=True)
    ]


def check_entries(config: RunConfig, sets: list[LoadedSet]) -> None:
    """Fail before anything is loaded or written: ``loglik`` needs every item's choices."""
    from lladapt.common.errors import ConfigError, ErrorItem

    if config.eval.scoring != "loglik":
        return
    for s in sets:
        for i, ex in enumerate(s.examples):
            if not s.dataset.choices(ex):
                raise ConfigError([ErrorItem(
                    "eval.scoring",
                    f"dataset '{s.name}' supplies no answer choices (item {i}: {ex.source}); "
                    "log-likelihood scoring needs a multiple-choice dataset",
                )])


def answer_settings(config: RunConfig, model: Any, entry: Entry, evaluation: Evaluation,
                    adapter: dict[str, Any] | None) -> dict[str, Any]:
    """What the answers of ``entry`` depend on; batch size, cache, order and merging do not."""
    m = config.model
    return {
        "model": {"source": m.source, "revision": m.revision, "tokenizer": m.tokenizer, "dtype": m.dtype,
                  "quantization": m.quantization.model_dump() if m.quantization else None},
        "adapter": adapter,
        "template": config.data.template,
        "dataset": {"name": entry.name, "split": entry.split, "options": dict(entry.options),
                    "limit": config.eval.limit, "items": len(entry.examples)},
        **evaluation.answer_settings(),
    }


def evaluate_all(
    model: Any,
    tokenizer: Any,
    config: RunConfig,
    sets: list[LoadedSet],
    out: Path,
    *,
    echo: Callable[[str], None] = lambda _: None,
    progress: Progress | None = None,
    fresh: bool = False,
    eval_dir: str = EVAL_DIR,
) -> list[dict[str, Any]]:
    """Evaluate every entry into ``out/eval_dir``; ``fresh`` discards earlier predictions (a run
    that replaces another), else finished items are read back and not recomputed. Returns the
    summaries."""
    from lladapt.data.loading import get_template

    template = get_template(config.data.template)
    progress = progress if progress is not None else default_progress()
    adapter = adapter_identity(model)
    summaries = []
    with prepared(model, merge=config.eval.merge_adapter and config.eval.protocol == "fast") as merged:
        jobs = []
        for entry in entries_for(config, sets):
            evaluation = evaluation_for(config, entry.dataset.max_new_tokens)
            store = PredictionStore(out / eval_dir / f"{entry.label}.jsonl",
                                    answer_settings(config, model, entry, evaluation, adapter))
            if fresh and processes().main:
                store.discard()
            jobs.append((entry, evaluation, store))

        def starting(entry: Entry) -> None:
            echo(f"evaluating {entry.label}: {len(entry.examples)} examples"
                 + (" (adapter merged)" if merged else ""))

        scores = evaluate_entries(model, tokenizer, template, jobs, progress=progress, starting=starting)
        for (entry, _, _), scored in zip(jobs, scores, strict=True):
            scored.notes = _notes(config, entry)
            if scored.computed < scored.total:
                scored.notes["resumed"] = scored.total - scored.computed
            summaries.append(scored.summary())
            echo(f"{entry.label}: {scored.accuracy:.1%} ({scored.correct}/{scored.total} correct, "
                 f"{scored.unparsed} unparsed, {scored.seconds:.1f} s)")
    return summaries


def _notes(config: RunConfig, entry: Entry) -> dict[str, Any]:
    """Settings the results table should show next to the numbers."""
    notes: dict[str, Any] = {"protocol": config.eval.protocol, "scoring": config.eval.scoring}
    if config.eval.stop:
        notes["stop"] = list(config.eval.stop)
    if entry.options:
        notes["options"] = dict(entry.options)
    return notes
