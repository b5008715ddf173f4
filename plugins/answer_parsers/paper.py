"""The answer parsers of the LLM-Adapters code, rule for rule (its ``evaluate.py`` and
``commonsense_evaluate.py``), except that a response with no answer in it parses to ``None`` (the
code returned ``inf`` or ``""``, which always scored as wrong) so that it is counted apart.

* ``number`` (gsm8k, SVAMP, MultiArith, AddSub, SingleEq, MAWPS): remove commas, take the LAST
  match of ``-?\\d+\\.?\\d*``; correct when ``|prediction - gold| <= 0.001``.
* ``letter`` (AQuA, MathQA): the FIRST of ``A B C D E`` anywhere in the response (the "A" of
  "Answer" included: that is the code's rule); correct when equal to the gold letter.
* ``choice`` (the commonsense sets): the FIRST match of the dataset's answer words (``true|false``,
  ``solution1|solution2``, ``answer1..answer5``, ``ending1..ending4``, ``option1|option2``),
  case-sensitive, anywhere (inside other words too); correct when equal to the gold word.
"""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field

from lladapt import AnswerParser, ComponentConfig, DataError

#: every answer word of the eight commonsense sets, in the order the code tries them: the
#: ``choice`` parser's words when a dataset configures none (training mixes, custom files).
ALL_CHOICES: tuple[str, ...] = (
    "true", "false", "solution1", "solution2",
    "answer1", "answer2", "answer3", "answer4", "answer5",
    "ending1", "ending2", "ending3", "ending4", "option1", "option2",
)

NUMBER = re.compile(r"-?\d+\.?\d*")
LETTER = re.compile(r"A|B|C|D|E")


def gold_number(gold: str) -> float:
    """The gold answer of a math record as a number (``"15.0"``, ``"1,000"``)."""
    try:
        return float(str(gold).replace(",", ""))
    except ValueError:
        raise DataError(f"gold answer {gold!r} is not a number", field="answer") from None


class NumberParser(AnswerParser):
    """The last number in the response (commas removed); correct within 0.001 (the paper's rule)."""

    name = "number"

    class Config(ComponentConfig):
        #: largest |prediction - gold| still counted correct.
        tolerance: float = Field(default=0.001, ge=0)

    def parse(self, text: str) -> float | None:
        found = NUMBER.findall(text.replace(",", ""))
        return float(found[-1]) if found else None

    def is_correct(self, prediction: float | None, gold: str) -> bool:
        if prediction is None:
            return False
        return abs(gold_number(gold) - prediction) <= self.config.tolerance


class LetterParser(AnswerParser):
    """The first of A-E anywhere in the response, as the paper's code reads AQuA."""

    name = "letter"

    def parse(self, text: str) -> str | None:
        found = LETTER.findall(text.strip())
        return found[0] if found else None

    def is_correct(self, prediction: str | None, gold: str) -> bool:
        return prediction is not None and prediction == gold


class ChoiceConfig(ComponentConfig):
    #: the answer words, e.g. ``[true, false]``; empty: every commonsense set's words.
    choices: list[str] = Field(default_factory=list)


class ChoiceParser(AnswerParser):
    """The first of the dataset's answer words in the response (the paper's commonsense rule)."""

    name = "choice"
    Config = ChoiceConfig
    #: the words used when the config names none.
    default_choices: ClassVar[tuple[str, ...]] = ALL_CHOICES

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self.config.choices) or self.default_choices

    def parse(self, text: str) -> str | None:
        found = re.findall("|".join(map(re.escape, self.choices)), text.strip())
        return found[0] if found else None

    def is_correct(self, prediction: str | None, gold: str) -> bool:
        return prediction is not None and prediction == gold
