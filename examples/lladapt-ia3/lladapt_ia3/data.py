"""A dataset and an answer parser: English antonyms, answered with one word.

The records are generated in code (no files), so the example runs anywhere. Every fourth pair is
held out as the test split.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

import lladapt

PAIRS = (
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("old", "new"),
    ("high", "low"), ("light", "dark"), ("open", "closed"), ("full", "empty"), ("happy", "sad"),
    ("early", "late"), ("hard", "soft"), ("long", "short"), ("rich", "poor"), ("wet", "dry"),
    ("loud", "quiet"), ("strong", "weak"), ("thick", "thin"), ("first", "last"), ("near", "far"),
    ("left", "right"), ("day", "night"), ("true", "false"), ("win", "lose"), ("give", "take"),
    ("push", "pull"), ("buy", "sell"), ("in", "out"), ("clean", "dirty"), ("young", "old"),
    ("top", "bottom"), ("start", "end"),
)


class Antonyms(lladapt.Dataset):
    """English antonyms: name the opposite of a word, in one word (generated in code)."""

    name = "antonyms"
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    task = "lexical"
    parser = "word"  # the answer parser below
    max_new_tokens = 4

    class Config(lladapt.ComponentConfig):
        #: ``both`` also asks each pair the other way round (cold -> hot).
        directions: Literal["forward", "both"] = "both"

    def load(self, split: str) -> list[lladapt.Example]:
        """``split`` is one of :attr:`splits`: lladapt checks it before calling ``load``."""
        pairs = [p for i, p in enumerate(PAIRS) if (i % 4 == 3) == (split == "test")]
        if self.config.directions == "both":
            pairs += [(b, a) for a, b in pairs]
        return [
            lladapt.Example(
                instruction=f"What is the opposite of the word '{word}'? Answer with one word.",
                output=opposite,
                answer=opposite,
                source=f"antonyms/{split}#{i}",
            )
            for i, (word, opposite) in enumerate(pairs)
        ]


class WordParser(lladapt.AnswerParser):
    """The first word of the response, lower-cased, skipping filler words ('the', 'is' ...)."""

    name = "word"

    class Config(lladapt.ComponentConfig):
        #: words passed over before the answer.
        skip: tuple[str, ...] = ("the", "a", "an", "answer", "is", "opposite", "of")

    def parse(self, text: str) -> str | None:
        words = [w for w in re.findall(r"[a-z]+", text.lower()) if w not in self.config.skip]
        return words[0] if words else None  # None: unparsed, counted apart

    def is_correct(self, prediction: str | None, gold: str) -> bool:
        return prediction is not None and prediction == gold.strip().lower()
