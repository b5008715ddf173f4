"""The evaluator: batched generation (left padding WITH an attention mask, the fix for
LLM-Adapters issue #61), the template's response extraction, answer parsing and scoring. A failed
parse is counted apart from a wrong answer."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lladapt.interfaces import AnswerParser, Example, PromptTemplate

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedTokenizerBase

@dataclass
class Prediction:
    index: int
    source: str
    answer: str
    response: str
    prediction: Any
    correct: bool

@dataclass
class Score:
    dataset: str
    total: int
    correct: int
    unparsed: int
    seconds: float
    generated_tokens: int
    predictions: list[Prediction] = field(default_factory=list, repr=False)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "accuracy": round(self.accuracy, 6),
            "correct": self.correct,
            "total": self.total,
            "unparsed": self.unparsed,
            "wrong": self.total - self.correct - self.unparsed,
            "seconds": round(self.seconds, 2),
            "generated_tokens": self.generated_tokens,
        }

def generate_responses(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    template: PromptTemplate,
    examples: Sequence[Example],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    num_beams: int = 1,
) -> tuple[list[str], int]:
    """Responses to ``examples`` (prompt+generation decoded, then the template's extraction, as
    the paper's code does), and the number of tokens generated."""
    import torch

    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = next((p.device for p in model.parameters() if p.device.type != "meta"), torch.device("cpu"))
    responses: list[str] = []
    generated = 0
    try:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            prompts = [template.eval_prompt(ex) for ex in chunk]
            enc = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    num_beams=num_beams,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            for prompt, row in zip(prompts, new_tokens, strict=True):
                ids = row.tolist()
                if tokenizer.pad_token_id is not None:
                    while ids and ids[-1] == tokenizer.pad_token_id:
                        ids.pop()
                generated += len(ids)
                text = tokenizer.decode(ids, skip_special_tokens=True)
                responses.append(template.extract_response(prompt + text))
    finally:
        tokenizer.padding_side = previous_side
    return responses, generated

def score(
    name: str,
    examples: Sequence[Example],
    responses: Sequence[str],
    parser: AnswerParser,
) -> Score:
    """Parse and score responses; unparsed (None) answers are counted apart."""
    result = Score(dataset=name, total=len(examples), correct=0, unparsed=0, seconds=0.0, generated_tokens=0)
    for i, (ex, response) in enumerate(zip(examples, responses, strict=True)):
        prediction = parser.parse(response)
        correct = prediction is not None and parser.is_correct(prediction, ex.answer)
        result.correct += int(correct)
        result.unparsed += int(prediction is None)
        result.predictions.append(Prediction(i, ex.source, ex.answer, response, prediction, correct))
    return result

def evaluate_dataset(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    template: PromptTemplate,
    name: str,
    examples: Sequence[Example],
    parser: AnswerParser,
    *,
    max_new_tokens: int,
    batch_size: int,
    num_beams: int,
) -> Score:
    started = time.perf_counter()
    responses, generated = generate_responses(
        model, tokenizer, template, examples,
        max_new_tokens=max_new_tokens, batch_size=batch_size, num_beams=num_beams,
    )
    result = score(name, examples, responses, parser)
    result.seconds = time.perf_counter() - started
    result.generated_tokens = generated
    return result

def write_predictions(path: Path, result: Score) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for pred in result.predictions:
            fh.write(json.dumps(asdict(pred), default=str) + "\n")
    tmp.replace(path)

