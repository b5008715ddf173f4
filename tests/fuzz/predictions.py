"""Predictions files, results and metrics of two run folders: lines cut short, odd JSON, records
with missing fields and wrong types, huge strings, broken results.json; read by ``lladapt
compare`` and ``lladapt report``."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.cli_property import Outcome, run_cli

MUTATIONS = ["truncate", "junk_line", "record", "record", "huge", "duplicate", "results", "results", "metrics",
             "settings", "no_eval", "bytes"]
JUNK = [None, -1, 0, 10**30, 1.5, float("nan"), "💥", "", [], {}, True, "x" * 1000]


def _record(index: int, correct: bool) -> dict[str, Any]:
    return {"index": index, "response": f"the answer is {index}", "generated_tokens": 5,
            "prompt_sha": f"{index:016x}", "source": f"arith/test#{index}", "answer": str(index),
            "prediction": float(index), "correct": correct, "seconds": 0.1, "settings": "abc"}


def make_run(folder: Path, seed: int) -> None:
    rng = random.Random(seed)
    (folder / "eval").mkdir(parents=True)
    records = [_record(i, rng.random() < 0.5) for i in range(6)]
    (folder / "eval" / "arith-test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "eval" / "arith-test.settings.json").write_text(json.dumps({"model": "m"}))
    entry = {"dataset": "arith", "split": "test", "label": "arith-test", "accuracy": 0.5, "correct": 3,
             "unparsed": 0, "total": 6, "seconds": 1.0}
    (folder / "results.json").write_text(json.dumps({
        "model": "/models/stories260k", "adapter": {"name": "lora", "trainable_parameters": 10},
        "train": {"steps": 2, "seconds": 1.0, "final_loss": 1.0}, "eval": [entry]}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2)))


@dataclass(frozen=True)
class PredictionCase:
    mutations: tuple[tuple[str, str, int], ...]  # (kind, run "a" or "b", seed)
    command: str


def prediction_cases() -> st.SearchStrategy[PredictionCase]:
    one = st.tuples(st.sampled_from(MUTATIONS), st.sampled_from(["a", "b"]), st.integers(min_value=0, max_value=2**32))
    return st.builds(PredictionCase, st.lists(one, min_size=1, max_size=3).map(tuple),
                     st.sampled_from(["compare", "report"]))


def _edit(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict) and value:
        key = rng.choice(sorted(value))
        if rng.random() < 0.4:
            return {k: v for k, v in value.items() if k != key}
        return {**value, key: _edit(value[key], rng) if rng.random() < 0.5 else rng.choice(JUNK)}
    if isinstance(value, list) and value:
        index = rng.randrange(len(value))
        return [*value[:index], _edit(value[index], rng), *value[index + 1:]]
    return rng.choice(JUNK)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="surrogateescape")  # an earlier mutation's bytes kept


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", errors="surrogateescape")


def _mutate(run: Path, kind: str, seed: int) -> None:
    rng = random.Random(seed)
    predictions = run / "eval" / "arith-test.jsonl"
    lines = _read(predictions).splitlines(keepends=True) if predictions.is_file() else []
    if kind == "truncate" and lines:
        text = "".join(lines)
        _write(predictions, text[: rng.randrange(len(text))])
    elif kind == "junk_line":
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(["{\n", "[]\n", "null\n", "\n", "💥\n", '{"index": "1"}\n']))
        _write(predictions, "".join(lines))
    elif kind in ("record", "huge", "duplicate") and lines:
        index = rng.randrange(len(lines))
        try:
            record = json.loads(lines[index])
        except ValueError:
            record = {}
        record = record if isinstance(record, dict) else {}
        if kind == "record":
            record = _edit(record, rng)
        elif kind == "huge":
            record["response"] = "é" * 200_000
        else:
            lines.append(lines[index])
        lines[index] = json.dumps(record) + "\n"
        _write(predictions, "".join(lines))
    elif kind == "results":
        try:
            results = json.loads(_read(run / "results.json")) if rng.random() < 0.9 else None
        except ValueError:
            results = None
        (run / "results.json").write_text(json.dumps(_edit(results, rng)))
    elif kind == "metrics":
        (run / "metrics.jsonl").write_text(rng.choice(['{"step": 1, "loss": "x"}\n', "{\n", '{"step": 1e400}\n',
                                                       '[1]\n', '{"step": true, "loss": null}\n']))
    elif kind == "settings":
        (run / "eval" / "arith-test.settings.json").write_text(rng.choice(["{", "[]", "💥"]))
    elif kind == "no_eval":
        predictions.unlink(missing_ok=True)
    elif kind == "bytes":
        target = rng.choice([predictions, run / "results.json", run / "metrics.jsonl"])
        target.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(64))))


def run_prediction_case(case: PredictionCase, workdir: Path) -> Outcome:
    runs = {"a": workdir / "a", "b": workdir / "b"}
    for i, folder in enumerate(runs.values()):
        make_run(folder, i)
    for kind, which, seed in case.mutations:
        _mutate(runs[which], kind, seed)
    if case.command == "compare":
        args = ["compare", str(runs["a"]), str(runs["b"]), "--json"]
    else:
        args = ["report", str(runs["a"]), str(runs["b"]), "--out", str(workdir / "report"), "--no-charts"]
    return run_cli("predictions", args, [workdir])
