"""Parsing and scoring: a response (or a chosen answer) against the gold answer. A failed parse
is counted apart from a wrong answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lladapt.components.interfaces import AnswerParser, Example


@dataclass
class Prediction:
    index: int
    source: str
    answer: str
    response: str
    prediction: Any
    correct: bool
    generated_tokens: int = 0


@dataclass
class Score:
    dataset: str
    total: int
    correct: int
    unparsed: int
    seconds: float
    generated_tokens: int
    predictions: list[Prediction] = field(default_factory=list, repr=False)
    #: what tells this entry apart from another of the same dataset and split (``arith-test-2``).
    label: str | None = None
    split: str | None = None
    #: settings worth showing next to the numbers (``stop``, ``scoring``, ``protocol``).
    notes: dict[str, Any] = field(default_factory=dict)
    #: items computed in this call (the rest came from an earlier, interrupted run).
    computed: int = 0
    #: how the responses were generated (:func:`lladapt.evaluation.generation.generation_path`:
    #: ``continuous``, ``compacting`` or ``generate``); None for log-likelihood scoring.
    generation_path: str | None = None

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dataset": self.dataset}
        if self.label is not None:
            out["label"] = self.label
        if self.split is not None:
            out["split"] = self.split
        out.update({
            "accuracy": round(self.accuracy, 6),
            "correct": self.correct,
            "total": self.total,
            "unparsed": self.unparsed,
            "wrong": self.total - self.correct - self.unparsed,
            "seconds": round(self.seconds, 2),
            "generated_tokens": self.generated_tokens,
        })
        if self.generation_path is not None:
            out["generation_path"] = self.generation_path
        out.update(self.notes)
        return out


def judge(parser: AnswerParser, response: str, gold: str) -> tuple[Any, bool]:
    """The parsed answer of ``response`` and whether it equals ``gold`` (None: unparsed)."""
    prediction = parser.parse(response)
    return prediction, prediction is not None and parser.is_correct(prediction, gold)


def score(
    name: str,
    examples: Sequence[Example],
    responses: Sequence[str],
    parser: AnswerParser,
    generated_tokens: Sequence[int] | None = None,
) -> Score:
    """Parse and score responses; unparsed (None) answers are counted apart."""
    result = Score(dataset=name, total=len(examples), correct=0, unparsed=0, seconds=0.0, generated_tokens=0)
    counts = generated_tokens if generated_tokens is not None else [0] * len(examples)
    for i, (ex, response, n) in enumerate(zip(examples, responses, counts, strict=True)):
        prediction, correct = judge(parser, response, ex.answer)
        result.correct += int(correct)
        result.unparsed += int(prediction is None)
        result.generated_tokens += n
        result.predictions.append(Prediction(i, ex.source, ex.answer, response, prediction, correct, n))
    return result
