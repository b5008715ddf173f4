"""``json``: a user's own file of records (a JSON array, or JSON lines), with a field mapping.

.. code-block:: yaml

    data:
      train:
        - name: json
          path: my_train.jsonl
          fields: {instruction: question, output: solution, answer: label}
    eval:
      datasets:
        - name: json
          files: {test: my_test.json}
          parser: choice
          parser_options: {choices: [yes, no]}
          max_new_tokens: 32
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from lladapt import ComponentConfig, DataError, Dataset, Example
from lladapt.data.loading import FIELDS, read_examples


class JsonConfig(ComponentConfig):
    #: one file for every split (train and test).
    path: Path | None = None
    #: one file per split, e.g. ``{train: a.json, test: b.json}``.
    files: dict[str, Path] = Field(default_factory=dict)
    #: ``auto``: ``.jsonl`` / ``.ndjson`` files are JSON lines, anything else a JSON array.
    format: Literal["auto", "json", "jsonl"] = "auto"
    #: example field -> the key in your records, e.g. ``{instruction: question}``.
    fields: dict[Literal["instruction", "input", "output", "answer"], str] = Field(default_factory=dict)
    #: example fields every record must have (the others default to empty). Fields named in
    #: ``fields`` are required too.
    required: list[Literal["instruction", "input", "output", "answer"]] = Field(
        default_factory=lambda: ["instruction", "output"]
    )
    task: str = "math"
    parser: str = "number"
    parser_options: dict[str, Any] = Field(default_factory=dict)
    max_new_tokens: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> JsonConfig:
        if (self.path is None) == (not self.files):
            raise ValueError("give exactly one of `path` (one file) and `files` (one per split)")
        return self


class JsonFile(Dataset):
    """Your own JSON / JSON-lines file of {instruction, input, output, answer} records."""

    name = "json"
    aliases = ("jsonl",)
    splits = ("train", "test")

    Config = JsonConfig

    def __init__(self, config: JsonConfig | None = None):
        super().__init__(config)
        cfg: JsonConfig = self.config
        # what this instance evaluates with: read by lladapt.data.loading.make_parser and the evaluator.
        self.splits = tuple(cfg.files) or type(self).splits
        self.task = cfg.task
        self.parser = cfg.parser
        self.parser_options = dict(cfg.parser_options)
        self.max_new_tokens = cfg.max_new_tokens

    def load(self, split: str) -> list[Example]:
        cfg: JsonConfig = self.config
        path = cfg.files.get(split) if cfg.files else cfg.path
        if path is None:
            raise DataError(f"dataset 'json' has no split '{split}'; its splits: {', '.join(self.splits)}")
        required = [f for f in FIELDS if f in cfg.required or f in cfg.fields]
        return read_examples(
            Path(path).expanduser(),
            source=f"{Path(path).name}",
            fields=cfg.fields,
            required=required,
            format=cfg.format,
        )
