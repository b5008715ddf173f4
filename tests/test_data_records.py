"""Record files: every malformed case is a DataError naming the file, the record and the field;
the generic json dataset with a field mapping; the synthetic arith dataset; dataset references."""

from __future__ import annotations

import json

import pytest

from lladapt.common.errors import ConfigError, DataError
from lladapt.data.loading import (
    build_dataset,
    format_example,
    load_examples,
    load_run_data,
    make_parser,
    read_examples,
)

GOOD = {"instruction": "2 + 3?", "input": "", "output": "2 + 3 = 5. The answer is 5.", "answer": "5"}


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def error_of(path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        read_examples(path, source="t", **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------- malformed files


def test_missing_field_names_file_record_and_field(tmp_path):
    path = write(tmp_path, "a.json", [GOOD, GOOD, {"instruction": "x", "input": "", "output": "y"}])
    assert error_of(path) == (
        f"{path}: record 2: field 'answer': missing (the record has: instruction, input, output)"
    )


def test_wrong_type_names_the_field_and_the_value(tmp_path):
    path = write(tmp_path, "a.json", [GOOD, {**GOOD, "instruction": ["not", "text"]}])
    assert error_of(path) == f'{path}: record 1: field \'instruction\': must be a string, got list (["not", "text"])'
    path = write(tmp_path, "b.json", [{**GOOD, "answer": None}])
    assert error_of(path) == f"{path}: record 0: field 'answer': must be a string or a number, got null (null)"


def test_a_numeric_answer_is_read_as_text(tmp_path):
    path = write(tmp_path, "a.json", [{**GOOD, "answer": 5}, {**GOOD, "answer": 2.5}])
    assert [ex.answer for ex in read_examples(path, source="t")] == ["5", "2.5"]


def test_non_json_names_line_and_column(tmp_path):
    path = write(tmp_path, "a.json", '[{"instruction": "x",\n  "answer" "5"}]')
    assert error_of(path) == f"{path}: not valid JSON: Expecting ':' delimiter (line 2, column 12)"


def test_empty_file_and_empty_array(tmp_path):
    assert error_of(write(tmp_path, "a.json", "  \n")) == f"{tmp_path / 'a.json'}: the file is empty"
    assert error_of(write(tmp_path, "b.json", "[]")) == f"{tmp_path / 'b.json'}: the file holds no records"


def test_top_level_must_be_an_array_of_objects(tmp_path):
    path = write(tmp_path, "a.json", GOOD)
    assert error_of(path) == (
        f"{path}: expected a JSON array of records, got a JSON dict "
        "(for one record per line, name the file .jsonl)"
    )
    path = write(tmp_path, "b.json", [GOOD, "just text"])
    assert error_of(path) == f"{path}: record 1: expected a JSON object, got str"


def test_jsonl_bad_line_names_line_and_record(tmp_path):
    path = write(tmp_path, "a.jsonl", json.dumps(GOOD) + "\n\n" + json.dumps(GOOD) + "\n{oops\n")
    assert error_of(path) == (
        f"{path}: record 2: line 4 is not valid JSON: Expecting property name enclosed in double "
        "quotes (column 2)"
    )


def test_not_utf8_and_missing_file(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b'[{"instruction": "\xff"}]')
    assert error_of(path) == f"{path}: not UTF-8 text (invalid start byte at byte 18)"
    assert error_of(tmp_path / "none.json") == f"{tmp_path / 'none.json'}: no such file"


# --------------------------------------------------------------------------- the json dataset


def test_json_dataset_maps_fields_and_requires_the_mapped_ones(tmp_path):
    path = write(tmp_path, "mine.jsonl", "\n".join(json.dumps(r) for r in [
        {"question": "Is ice cold?", "solution": "Yes.", "label": "true"},
        {"question": "Is fire cold?", "solution": "No.", "label": "false", "extra": 1},
    ]))
    ref = {"name": "jsonl", "path": str(path),
           "fields": {"instruction": "question", "output": "solution", "answer": "label"},
           "parser": "choice", "parser_options": {"choices": ["true", "false"]}, "max_new_tokens": 8}
    examples = load_examples(ref, "test")
    assert [(e.instruction, e.input, e.output, e.answer, e.source) for e in examples] == [
        ("Is ice cold?", "", "Yes.", "true", "mine.jsonl#0"),
        ("Is fire cold?", "", "No.", "false", "mine.jsonl#1"),
    ]
    dataset = build_dataset(ref)
    assert (dataset.max_new_tokens, dataset.parser) == (8, "choice")
    parser = make_parser(dataset)
    assert parser.parse("untrue, so false") == "true"  # the paper rule, with this file's words
    write(tmp_path, "mine.jsonl", json.dumps({"question": "q", "solution": "s"}))
    with pytest.raises(DataError, match=r"mine.jsonl: record 0: field 'label': missing"):
        load_examples(ref, "test")


def test_json_dataset_files_per_split_and_config_errors(tmp_path):
    train = write(tmp_path, "train.json", [GOOD])
    ref = {"name": "json", "files": {"train": str(train)}}
    assert len(load_examples(ref)) == 1
    with pytest.raises(DataError, match="dataset 'json' has no split 'test'; its splits: train"):
        load_examples(ref, "test")
    with pytest.raises(ConfigError, match="give exactly one of `path`"):
        build_dataset({"name": "json"})
    with pytest.raises(ConfigError, match=r"json.pth: unknown key; did you mean 'path'\?"):
        build_dataset({"name": "json", "pth": "x.json"})


# --------------------------------------------------------------------------- arith


def test_arith_is_seeded_and_its_splits_do_not_overlap():
    train = load_examples("arith", "train")
    test = load_examples({"name": "arith", "seed": 0}, "test")
    assert (len(train), len(test)) == (1000, 100)
    assert load_examples("arith", "test") == test  # same seed, same problems
    assert load_examples({"name": "arith", "seed": 1}, "test") != test
    assert not {e.instruction for e in train} & {e.instruction for e in test}
    parser = make_parser(build_dataset("arith"))
    assert all(parser.is_correct(parser.parse(e.output), e.answer) for e in train + test)
    assert train[0].source == "arith/train#0" and test[-1].source == "arith/test#99"


def test_arith_operations_choose_the_kinds_of_problem():
    default = load_examples("arith", "test")
    assert load_examples({"name": "arith", "operations": ["add", "sub", "mul"]}, "test") == default
    assert {e.output.split(" so ")[1].split()[1] for e in default} == {"+", "-", "*"}
    easy = load_examples({"name": "arith", "max_number": 9, "operations": ["add", "sub"]}, "test")
    assert {e.output.split(" so ")[1].split()[1] for e in easy} == {"+", "-"}
    assert all(int(e.answer) <= 18 for e in easy)
    with pytest.raises(Exception, match="operations"):
        load_examples({"name": "arith", "operations": ["div"]}, "test")


def test_arith_refuses_impossible_sizes():
    with pytest.raises(DataError, match="cannot draw 5000 distinct problems with max_number=2"):
        load_examples({"name": "arith", "max_number": 2, "test_size": 5000}, "test")


# --------------------------------------------------------------------------- references, configs


def test_limits_splits_and_unknown_names():
    assert len(load_examples({"name": "arith", "limit": 7})) == 7
    assert len(load_examples({"name": "arith", "limit": 7}, limit=3)) == 3
    with pytest.raises(DataError, match="dataset 'arith' has no split 'tset'; its splits: train, test; did you mean 'test'"):
        load_examples("arith", "tset")
    with pytest.raises(Exception, match="unknown dataset 'arihtm'.*did you mean 'arith'"):
        load_examples("arihtm")


def test_train_and_eval_sets_from_a_config(tmp_path):
    from lladapt.config import load_config

    config = load_config({
        "model": "llama-7b",
        "data": {"train": [{"name": "arith", "limit": 10}, "arith"]},
        "eval": {"datasets": ["arith"], "limit": 4},
    })
    data = load_run_data(config)
    assert [len(s.examples) for s in data.train] == [10, 1000]
    assert len(data.train_examples) == 1010
    assert data.train_examples[10:] == data.train[1].examples  # config order kept
    (only,) = data.eval
    assert (only.name, only.split, len(only.examples), only.dataset.max_new_tokens) == ("arith", "test", 4, 32)
    assert [s.label for s in data.train] == ["arith:train", "arith:train"]
    assert format_example("alpaca", only.examples[0], train=False).endswith("### Response:\n")
