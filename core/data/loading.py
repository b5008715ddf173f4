"""Examples from datasets.

* reading a record file (a JSON array or JSON lines) and validating every record, so that a bad
  file fails with a :class:`~lladapt.common.errors.DataError` naming the file, the record index (0-based)
  and the field, never by skipping records;
* turning a dataset reference of a config (``{name, split, limit, ...its own fields}``) into the
  :class:`~lladapt.components.interfaces.Dataset` and its examples, for training and for evaluation;
* the answer parser that fits a dataset, and rendering an example with a prompt template.

Tokenisation is the trainer's step (``lladapt.data.tokenization``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from lladapt.common.errors import ConfigError, DataError
from lladapt.components.interfaces import AnswerParser, Dataset, Example, PromptTemplate
from lladapt.registry import did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from lladapt.config import DatasetRef, RunConfig

__all__ = [
    "FIELDS",
    "LoadedSet",
    "RunData",
    "build_dataset",
    "default_split",
    "format_example",
    "get_template",
    "load_examples",
    "load_run_data",
    "load_set",
    "make_parser",
    "normalize_text",
    "read_examples",
    "read_records",
    "to_examples",
]

#: the fields of a record in the LLM-Adapters format.
FIELDS: tuple[str, ...] = ("instruction", "input", "output", "answer")

Format = Literal["auto", "json", "jsonl"]


# --------------------------------------------------------------------------- files and records


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def read_records(path: str | Path, *, format: Format = "auto") -> list[dict[str, Any]]:
    """The records of a JSON array file or a JSON-lines file (``format="auto"``: by suffix,
    ``.jsonl`` / ``.ndjson`` are JSON lines). Every record must be an object; an empty file or
    one with no records is an error."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", file=str(path))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=str(path)) from None
    if not text.strip():
        raise DataError("the file is empty", file=str(path))
    if format == "auto":
        format = "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "json"
    if format == "jsonl":
        records = _jsonl_records(text, path)
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", file=str(path)
            ) from None
        if not isinstance(records, list):
            raise DataError(
                f"expected a JSON array of records, got a JSON {_type_name(records)}"
                + (" (for one record per line, name the file .jsonl)" if isinstance(records, dict) else ""),
                file=str(path),
            )
    if not records:
        raise DataError("the file holds no records", file=str(path))
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(
                f"expected a JSON object, got {_type_name(record)}", file=str(path), index=index
            )
    return records


def _jsonl_records(text: str, path: Path) -> list[Any]:
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines separate nothing in JSON lines
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(
                f"line {lineno} is not valid JSON: {exc.msg} (column {exc.colno})",
                file=str(path),
                index=len(records),
            ) from None
    return records


def _field_value(record: Mapping[str, Any], key: str, field: str, file: str, index: int) -> str:
    value = record[key]
    if isinstance(value, str):
        return value
    if field == "answer" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # a numeric gold answer is still an answer
    expected = "a string or a number" if field == "answer" else "a string"
    raise DataError(
        f"must be {expected}, got {_type_name(value)} ({json.dumps(value)[:60]})",
        file=file,
        index=index,
        field=key,
    )


def to_examples(
    records: Sequence[Mapping[str, Any]],
    *,
    file: str,
    source: str,
    fields: Mapping[str, str] | None = None,
    required: Iterable[str] = FIELDS,
) -> list[Example]:
    """Validate records and turn them into examples.

    ``fields`` maps an example field to the record's key (``{"instruction": "question"}``);
    ``required`` lists the example fields a record must have (the others default to ``""``).
    Each example's ``source`` is ``f"{source}#{index}"``.
    """
    keys = {f: f for f in FIELDS}
    keys.update(fields or {})
    required = tuple(required)
    out = []
    for index, record in enumerate(records):
        values = {}
        for field in FIELDS:
            key = keys[field]
            if key in record:
                values[field] = _field_value(record, key, field, file, index)
            elif field in required:
                have = ", ".join(record) or "no fields"
                raise DataError(f"missing (the record has: {have})", file=file, index=index, field=key)
            else:
                values[field] = ""
        out.append(Example(**values, source=f"{source}#{index}"))
    return out


def read_examples(
    path: str | Path,
    *,
    source: str,
    fields: Mapping[str, str] | None = None,
    required: Iterable[str] = FIELDS,
    format: Format = "auto",
) -> list[Example]:
    """:func:`read_records` then :func:`to_examples`."""
    return to_examples(
        read_records(path, format=format), file=str(path), source=source, fields=fields, required=required
    )


def normalize_text(text: str) -> str:
    """Whitespace-normalised, lower-cased text: the key that matches an instruction across files
    (the v1 held-out split, the overlap check)."""
    return " ".join(text.split()).lower()


# --------------------------------------------------------------------------- datasets


def _registry(kind: str):
    from lladapt.components.plugin_manager import get_registry

    return get_registry(kind)


def _as_ref(ref: DatasetRef | str | Mapping[str, Any]) -> DatasetRef:
    from lladapt.config import DatasetRef, errors_from_validation

    if isinstance(ref, DatasetRef):
        return ref
    try:
        return DatasetRef.model_validate(ref)
    except ValidationError as exc:
        raise ConfigError(errors_from_validation(exc, DatasetRef)) from None


def build_dataset(ref: DatasetRef | str | Mapping[str, Any], *, data_dir: Path | None = None) -> Dataset:
    """The dataset a reference names, built from its validated fields. ``data_dir`` (the config's
    ``data.data_dir``) applies when the dataset has a ``data_dir`` field the reference left unset."""
    from lladapt.config import component_options

    ref = _as_ref(ref)
    cls = _registry("dataset").get(ref.name)
    options = component_options(cls, ref, ref.name)
    if data_dir is not None and "data_dir" in cls.Config.model_fields and options.data_dir is None:
        options = options.model_copy(update={"data_dir": Path(data_dir)})
    return cls(options)


def default_split(dataset: Dataset, purpose: Literal["train", "eval"]) -> str:
    """``train`` for training; ``test`` for evaluation (``eval.split`` overrides it)."""
    return "train" if purpose == "train" else "test"


def _check_split(dataset: Dataset, split: str) -> None:
    if split in dataset.splits:
        return
    guess = did_you_mean(split, list(dataset.splits))
    raise DataError(
        f"dataset '{dataset.name}' has no split '{split}'; its splits: {', '.join(dataset.splits)}"
        + (f"; did you mean '{guess}'?" if guess else "")
    )


@dataclass(frozen=True)
class LoadedSet:
    """One split of one dataset, loaded: the dataset (parser, generation length), the split, the
    examples. ``name`` is the dataset's own name (an alias in the config resolves to it)."""

    name: str
    split: str
    dataset: Dataset
    examples: list[Example]

    @property
    def label(self) -> str:
        """``name:split``: how reports and warnings name the set."""
        return f"{self.name}:{self.split}"


def load_set(
    ref: DatasetRef | str | Mapping[str, Any],
    split: str | None = None,
    *,
    data_dir: Path | None = None,
    limit: int | None = None,
    purpose: Literal["train", "eval"] = "train",
) -> LoadedSet:
    """The examples a reference names: its ``split`` (else ``split``, else the purpose's default),
    cut to the smaller of its ``limit`` and ``limit``. The one way lladapt loads a dataset."""
    ref = _as_ref(ref)
    dataset = build_dataset(ref, data_dir=data_dir)
    split = ref.split or split or default_split(dataset, purpose)
    _check_split(dataset, split)
    examples = dataset.load(split)
    caps = [n for n in (ref.limit, limit) if n]
    return LoadedSet(
        dataset.name, split, dataset, list(examples[: min(caps)]) if caps else list(examples)
    )


def load_examples(
    ref: DatasetRef | str | Mapping[str, Any], split: str | None = None, **options: Any
) -> list[Example]:
    """The examples of :func:`load_set` (same arguments: ``data_dir``, ``limit``, ``purpose``)."""
    return load_set(ref, split, **options).examples


@dataclass(frozen=True)
class RunData:
    """A run's data: every ``data.train`` set and every ``eval.datasets`` set, in config order."""

    train: list[LoadedSet]
    eval: list[LoadedSet]

    @property
    def train_examples(self) -> list[Example]:
        """All training examples, in order."""
        return [ex for loaded in self.train for ex in loaded.examples]


def load_run_data(config: RunConfig, *, with_eval: bool = True) -> RunData:
    """Load a run's training sets (each reference's split, default ``train``) and evaluation sets
    (each reference's split, else ``eval.split``; ``eval.limit``), applying ``data.data_dir``
    and each reference's ``limit``. ``with_eval=False`` (``lladapt train``) skips the latter."""
    data_dir = config.data.data_dir
    return RunData(
        train=[load_set(ref, data_dir=data_dir, purpose="train") for ref in config.data.train],
        eval=eval_sets(config) if with_eval else [],
    )


def eval_sets(config: RunConfig) -> list[LoadedSet]:
    """A run's evaluation sets alone (``lladapt eval`` reads no training data)."""
    return [
        load_set(ref, config.eval.split, data_dir=config.data.data_dir, limit=config.eval.limit,
                 purpose="eval")
        for ref in config.eval.datasets
    ]


# --------------------------------------------------------------------------- parsers, templates


def make_parser(dataset: Dataset, name: str | None = None) -> AnswerParser:
    """The answer parser for ``dataset``: ``name`` (e.g. ``eval.parser``) or the dataset's own,
    configured with the dataset's ``parser_options`` that the parser's ``Config`` accepts."""
    from lladapt.config import component_options

    cls = _registry("answer_parser").get(name or dataset.parser)
    accepted = cls.Config.model_fields
    options = {k: v for k, v in dict(getattr(dataset, "parser_options", {})).items() if k in accepted}
    return cls(component_options(cls, options, cls.name))


def get_template(name: str | PromptTemplate) -> PromptTemplate:
    """A prompt template by name (an instance is returned as is)."""
    if isinstance(name, PromptTemplate):
        return name
    return _registry("prompt_template").get(name)()


def format_example(template: str | PromptTemplate, example: Example, *, train: bool = True) -> str:
    """The text a model sees: the training text (prompt and response) or the evaluation prompt."""
    template = get_template(template)
    return template.train_prompt(example) if train else template.eval_prompt(example)
