"""The LLM-Adapters prompt, defined once, in two variants.

* ``alpaca`` (default): the paper's prompt, clean. Training text = evaluation prompt + output, so
  the model is evaluated on exactly the prefix it was trained on.
* ``llm-adapters-compat``: byte-identical to the paper code's strings, where the code used them:
  ``finetune.py``'s training prompt (two spaces after "request." without an input, one with; 16
  spaces of indentation, blank lines included) and ``evaluate.py``'s evaluation prompt (one space
  after "request." without an input, none with; indented lines but bare blank lines). The masked
  prefix (``train_on_inputs: false``) is the training prompt with an empty output, as the code does.

A plugin adds a template by subclassing :class:`FormatTemplate` with its own four strings (or
:class:`lladapt.PromptTemplate` for anything else).
"""

from __future__ import annotations

from typing import ClassVar

from lladapt import Example, PromptTemplate


class FormatTemplate(PromptTemplate):
    """A template made of four ``str.format`` strings with ``{instruction}``, ``{input}`` and (in
    the training strings) ``{output}``; the ``*_input`` strings are used when the example has an
    input."""

    train_no_input: ClassVar[str]
    train_input: ClassVar[str]
    eval_no_input: ClassVar[str]
    eval_input: ClassVar[str]

    def _train(self, example: Example, output: str) -> str:
        template = self.train_input if example.input else self.train_no_input
        return template.format(instruction=example.instruction, input=example.input, output=output)

    def train_prompt(self, example: Example) -> str:
        return self._train(example, example.output)

    def train_prefix(self, example: Example) -> str:
        return self._train(example, "")

    def eval_prompt(self, example: Example) -> str:
        template = self.eval_input if example.input else self.eval_no_input
        return template.format(instruction=example.instruction, input=example.input)


_HEADER = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
_HEADER_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request."
)
_PROMPT = _HEADER + "\n\n### Instruction:\n{instruction}\n\n### Response:\n"
_PROMPT_INPUT = _HEADER_INPUT + "\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"


class Alpaca(FormatTemplate):
    """The paper's prompt (Alpaca style), clean: no stray spaces, same prefix in training and eval."""

    name = "alpaca"
    train_no_input = _PROMPT + "{output}"
    train_input = _PROMPT_INPUT + "{output}"
    eval_no_input = _PROMPT
    eval_input = _PROMPT_INPUT


class LLMAdaptersCompat(FormatTemplate):
    """The paper code's exact prompt strings, indentation and trailing spaces included."""

    name = "llm-adapters-compat"
    # finetune.py
    train_no_input = 'Below is an instruction that describes a task. Write a response that appropriately completes the request.  \n\n                ### Instruction:\n                {instruction}\n                \n                ### Response:\n                {output}'
    train_input = 'Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request. \n\n                ### Instruction:\n                {instruction}\n                \n                ### Input:\n                {input}\n                \n                ### Response:\n                {output}'
    # evaluate.py / commonsense_evaluate.py
    eval_no_input = 'Below is an instruction that describes a task. Write a response that appropriately completes the request. \n\n                ### Instruction:\n                {instruction}\n\n                ### Response:\n                '
    eval_input = 'Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n                ### Instruction:\n                {instruction}\n\n                ### Input:\n                {input}\n\n                ### Response:\n                '
