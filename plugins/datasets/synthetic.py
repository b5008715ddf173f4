"""``arith``: short arithmetic word problems generated in code from a seed, so the quickstart and
the tests need no files. Records follow the LLM-Adapters format: a chain-of-thought ``output``
ending in "The answer is N." and the number as ``answer``."""

from __future__ import annotations

import random
from typing import ClassVar, Literal

from pydantic import Field

from lladapt import ComponentConfig, DataError, Dataset, Example

_NAMES = ("Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jo", "Kim", "Leo")
_THINGS = ("apples", "books", "coins", "pens", "cards", "shells", "stamps", "marbles", "cookies")


OPERATIONS = ("add", "sub", "mul")


def _problem(rng: random.Random, max_number: int, operations: tuple[str, ...] = OPERATIONS) -> tuple[str, str, int]:
    """One (instruction, rationale, answer) triple; the answer is never negative."""
    name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
    a, b = rng.randint(2, max_number), rng.randint(2, max_number)
    kind = rng.choice(operations)
    if kind == "add":
        question = f"{name} has {a} {thing}. {name} gets {b} more. How many {thing} does {name} have now?"
        answer, steps = a + b, f"{name} has {a} {thing} and gets {b} more, so {a} + {b} = {a + b}."
    elif kind == "sub":
        a, b = max(a, b), min(a, b)
        question = f"{name} has {a} {thing}. {name} gives away {b}. How many {thing} are left?"
        answer, steps = a - b, f"{name} has {a} {thing} and gives away {b}, so {a} - {b} = {a - b}."
    else:
        b = rng.randint(2, 9)
        question = f"{name} has {b} boxes with {a} {thing} in each. How many {thing} are there in all?"
        answer, steps = a * b, f"There are {b} boxes of {a} {thing}, so {b} * {a} = {a * b}."
    return question, f"{steps} The answer is {answer}.", answer


class Arith(Dataset):
    """Synthetic arithmetic word problems (seeded, generated in code; no files needed)."""

    name = "arith"
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    task = "math"
    parser = "number"
    max_new_tokens = 32

    class Config(ComponentConfig):
        seed: int = 0
        train_size: int = Field(default=1000, ge=1)
        test_size: int = Field(default=100, ge=1)
        #: the largest operand.
        max_number: int = Field(default=20, ge=2)
        #: the kinds of problem drawn (each equally likely), in this order; the default draws
        #: the same problems as before the field existed.
        operations: tuple[Literal["add", "sub", "mul"], ...] = Field(default=OPERATIONS, min_length=1)

    def load(self, split: str) -> list[Example]:
        """The test split is drawn first; the train split never repeats a test question."""
        if split not in self.splits:
            raise DataError(f"dataset 'arith' has no split '{split}'; its splits: train, test")
        cfg = self.config
        rng = random.Random(cfg.seed)
        test = self._draw(rng, cfg.test_size, set())
        if split == "test":
            return self._examples(test, split)
        return self._examples(self._draw(rng, cfg.train_size, {q for q, _, _ in test}), split)

    def _draw(self, rng: random.Random, n: int, exclude: set[str]) -> list[tuple[str, str, int]]:
        """``n`` problems with distinct questions; gives up after 1,000 repeats in a row (the
        settings allow too few distinct problems)."""
        out, seen, misses = [], set(exclude), 0
        while len(out) < n:
            item = _problem(rng, self.config.max_number, tuple(self.config.operations))
            if item[0] in seen:
                misses += 1
                if misses == 1000:
                    raise DataError(
                        f"arith: cannot draw {n} distinct problems with max_number="
                        f"{self.config.max_number} and operations={list(self.config.operations)}; "
                        "raise max_number, allow more operations or lower the split size"
                    )
                continue
            misses = 0
            seen.add(item[0])
            out.append(item)
        return out

    def _examples(self, items: list[tuple[str, str, int]], split: str) -> list[Example]:
        return [
            Example(instruction=q, output=rationale, answer=str(answer), source=f"arith/{split}#{i}")
            for i, (q, rationale, answer) in enumerate(items)
        ]
