"""Prompt templates: ``alpaca`` (clean, default) and ``llm-adapters-compat`` (byte-identical to the
paper code's training and evaluation strings)."""

from __future__ import annotations

import pytest
from assets import shared_asset

from lladapt import Example
from lladapt.data.loading import format_example, get_template

PLAIN = Example(instruction="What is 2 + 3?", output="2 + 3 = 5. The answer is 5.", answer="5")
WITH_INPUT = Example(instruction="Add the numbers.", input="2 and 3", output="5", answer="5")


def test_alpaca_is_the_papers_prompt_without_stray_spaces():
    t = get_template("alpaca")
    assert t.eval_prompt(PLAIN) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nWhat is 2 + 3?\n\n### Response:\n"
    )
    assert t.train_prompt(PLAIN) == t.eval_prompt(PLAIN) + PLAIN.output
    assert t.eval_prompt(WITH_INPUT) == (
        "Below is an instruction that describes a task, paired with an input that provides further "
        "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
        "Add the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n"
    )
    for ex in (PLAIN, WITH_INPUT):
        assert t.train_prefix(ex) == t.eval_prompt(ex)


# The paper code's strings (DESIGN.md section 5), written out here so the test pins the bytes.
TRAIN_NO_INPUT = 'Below is an instruction that describes a task. Write a response that appropriately completes the request.  \n\n                ### Instruction:\n                {instruction}\n                \n                ### Response:\n                {output}'
TRAIN_INPUT = 'Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request. \n\n                ### Instruction:\n                {instruction}\n                \n                ### Input:\n                {input}\n                \n                ### Response:\n                {output}'
EVAL_NO_INPUT = 'Below is an instruction that describes a task. Write a response that appropriately completes the request. \n\n                ### Instruction:\n                {instruction}\n\n                ### Response:\n                '
EVAL_INPUT = 'Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n                ### Instruction:\n                {instruction}\n\n                ### Input:\n                {input}\n\n                ### Response:\n                '


def test_compat_is_byte_identical_to_the_paper_code():
    t = get_template("llm-adapters-compat")
    fields = {"instruction": PLAIN.instruction, "output": PLAIN.output}
    assert t.train_prompt(PLAIN) == TRAIN_NO_INPUT.format(**fields)
    assert t.train_prefix(PLAIN) == TRAIN_NO_INPUT.format(**{**fields, "output": ""})  # finetune.py's masking
    assert t.eval_prompt(PLAIN) == EVAL_NO_INPUT.format(instruction=PLAIN.instruction)
    fields = {"instruction": WITH_INPUT.instruction, "input": WITH_INPUT.input, "output": "5"}
    assert t.train_prompt(WITH_INPUT) == TRAIN_INPUT.format(**fields)
    assert t.eval_prompt(WITH_INPUT) == EVAL_INPUT.format(**fields)
    # the differences that matter: two spaces vs one after "request.", indented blank lines
    assert "request.  \n\n" in t.train_prompt(PLAIN) and "request. \n\n" in t.eval_prompt(PLAIN)
    assert "\n                \n" in t.train_prompt(PLAIN) and "\n                \n" not in t.eval_prompt(PLAIN)


def test_compat_matches_the_design_notes_when_present():
    text = shared_asset("docs", "DESIGN.md").read_text()
    block = text[text.index("TRAIN_NO_INPUT = "):]
    namespace: dict[str, str] = {}
    exec(block[: block.index("```")], namespace)  # four string literals
    assert [namespace[k] for k in ("TRAIN_NO_INPUT", "TRAIN_INPUT", "EVAL_NO_INPUT", "EVAL_INPUT")] == [
        TRAIN_NO_INPUT, TRAIN_INPUT, EVAL_NO_INPUT, EVAL_INPUT]


@pytest.mark.parametrize("name", ["alpaca", "llm-adapters-compat"])
def test_training_text_starts_with_its_masked_prefix(name):
    t = get_template(name)
    braces = Example(instruction="braces {x} stay", output="{y}")
    for ex in (PLAIN, WITH_INPUT, braces):
        assert t.train_prompt(ex).startswith(t.train_prefix(ex))
        assert t.train_prompt(ex).endswith(ex.output)
    assert "braces {x} stay" in t.eval_prompt(braces)  # the example's text is never a format string


def test_response_extraction_stops_at_a_second_marker():
    """The code takes text.split("### Response:")[1].strip(): a model that writes a second
    "### Response:" (small models often do) has its answer cut there."""
    t = get_template("llm-adapters-compat")
    generation = " The answer is 5.\n\n### Instruction:\nWhat is 9 + 9?\n\n### Response:\nThe answer is 18."
    decoded = t.eval_prompt(PLAIN) + generation
    assert t.extract_response(decoded) == decoded.split("### Response:")[1].strip()
    assert t.extract_response(decoded) == "The answer is 5.\n\n### Instruction:\nWhat is 9 + 9?"
    assert get_template("alpaca").extract_response("no marker at all ") == "no marker at all"


def test_format_example_and_registry():
    assert format_example("alpaca", PLAIN, train=True).endswith("### Response:\n" + PLAIN.output)
    assert format_example("llm-adapters-compat", PLAIN, train=False).endswith("### Response:\n                ")
    from lladapt import get_registry

    assert {"alpaca", "llm-adapters-compat"} <= set(get_registry("prompt_template").names())
