"""Helpers for the tests that run the whole pipeline (not a test module)."""

from __future__ import annotations

import json
from pathlib import Path


def rescored(path: Path, dataset_name: str) -> dict[str, int]:
    """correct, wrong and unparsed recounted line by line from a predictions file: each response
    parsed again with the dataset's parser and judged against the gold answer written beside it."""
    from lladapt.data.loading import build_dataset, make_parser

    parser = make_parser(build_dataset(dataset_name))
    counts = {"correct": 0, "wrong": 0, "unparsed": 0}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        prediction = parser.parse(record["response"])
        verdict = ("unparsed" if prediction is None
                   else "correct" if parser.is_correct(prediction, record["answer"]) else "wrong")
        assert record["correct"] == (verdict == "correct"), record
        counts[verdict] += 1
    return counts
