"""Dataset files of the ``json`` dataset: JSON arrays and JSON lines with records of wrong types
and missing fields, huge strings, truncated files, blank and broken lines, raw bytes. Fed to
``lladapt run``, which reads and checks every data file before it writes anything; the output
folder already holds a file, so a run whose data pass is refused there, before the model loads,
and the folder must stay as it was."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.cli_property import Outcome, run_cli
from tests.fuzz.configs import base_config
from tests.fuzz.values import ODD_TEXT, SCALARS, UNICODE_TEXT, huge_text, junk

FIELDS = ["instruction", "input", "output", "answer"]
FIELD_VALUES = st.one_of(UNICODE_TEXT, UNICODE_TEXT, ODD_TEXT, SCALARS, junk(4), huge_text())


def records() -> st.SearchStrategy[Any]:
    good = st.fixed_dictionaries({"instruction": UNICODE_TEXT, "output": UNICODE_TEXT},
                                 optional={"input": UNICODE_TEXT, "answer": UNICODE_TEXT})
    odd = st.dictionaries(st.one_of(st.sampled_from(FIELDS + ["question", "label"]), UNICODE_TEXT), FIELD_VALUES,
                          max_size=5)
    return st.one_of(good, good, odd, junk(4))


@dataclass(frozen=True)
class DataCase:
    content: bytes
    suffix: str
    format: str
    fields: dict[str, str]
    split: str  # where the file is used: "train" (data.train) or "test" (eval.datasets)


@st.composite
def data_cases(draw: st.DrawFn) -> DataCase:
    items = draw(st.lists(records(), max_size=8))
    shape = draw(st.sampled_from(["array", "lines", "lines", "truncated", "raw", "object", "blank lines"]))
    if shape == "array":
        content = json.dumps(items, ensure_ascii=False).encode("utf-8", "surrogatepass")
    elif shape == "object":
        content = json.dumps({"data": items}).encode()
    elif shape == "raw":
        content = draw(st.one_of(st.binary(max_size=300), st.sampled_from([b"", b"\xef\xbb\xbf[]", b"null", b"[", b"\xff"])))
    else:
        lines = [json.dumps(r, ensure_ascii=False) for r in items]
        if shape == "blank lines":
            lines = [x for line in lines for x in (line, draw(st.sampled_from(["", " ", "{", "[1]", "nul"])))]
        content = "\n".join(lines).encode("utf-8", "surrogatepass")
        if shape == "truncated" and content:
            content = content[: draw(st.integers(min_value=0, max_value=len(content) - 1))]
    fields = draw(st.one_of(st.just({}), st.dictionaries(st.sampled_from(FIELDS), st.sampled_from(["question", "label", "instruction", "💥"]), max_size=2)))
    return DataCase(content, draw(st.sampled_from([".json", ".jsonl", ".ndjson", ".txt"])),
                    draw(st.sampled_from(["auto", "auto", "json", "jsonl"])), fields,
                    draw(st.sampled_from(["train", "train", "test"])))


def run_data_case(case: DataCase, workdir: Path, model: str) -> Outcome:
    data = workdir / f"records{case.suffix}"
    data.write_bytes(case.content)
    out = workdir / "out"
    out.mkdir()
    (out / "kept.txt").write_text("an earlier run's file\n")
    config = base_config(model, str(out))
    entry = {"name": "json", "format": case.format, "fields": case.fields}
    if case.split == "train":
        config["data"]["train"] = [{**entry, "path": str(data)}]
    else:
        config["eval"]["datasets"] = [{**entry, "files": {"test": str(data)}}]
    path = workdir / "config.json"
    path.write_text(json.dumps(config))
    return run_cli("dataset", ["run", str(path)], [workdir])
