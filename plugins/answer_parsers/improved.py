"""Answer parsers that fix the paper code's known weaknesses, selectable by name; the defaults
(``number``, ``letter``, ``choice``) stay the paper's rules. Each first reads an explicit answer
statement ("The answer is (C)", "the correct answer is answer2"), then falls back:

* ``number-answer``: the last number of the sentence that follows the first "answer is" ("The
  answer is 49 - 34 = 15 customers." reads 15), else the paper's last number;
* ``letter-answer``: the letter after the first "answer is", else the first "(C)", else the first
  stand-alone capital A-E that is not the article "A" ("A train..."); never the "A" of "Answer";
* ``choice-answer``: the word after the first "correct answer is", else the first answer word
  standing as a whole word, case-insensitively ("Answer2" counts, "untrue" does not).
"""

from __future__ import annotations

import re

from lladapt.plugins.answer_parsers.paper import ChoiceParser, LetterParser, NumberParser

#: the rest of the sentence after "answer is": up to a full stop followed by a space or the end
#: (not the point of "2.5"), or a line break.
ANSWER_CLAUSE = re.compile(r"answer is(.*?)(?:\.(?:\s|$)|\n|$)", re.IGNORECASE | re.DOTALL)
ANSWER_LETTER = re.compile(r"(?i:answer(?:\s+choice)?\s+is)\s*:?\s*\(?([A-E])(?![A-Za-z])")
PAREN_LETTER = re.compile(r"\(([A-E])\)")
LONE_LETTER = re.compile(r"(?<![A-Za-z])([B-E]|A(?!\s+[a-z]))(?![A-Za-z])")


class AnswerNumberParser(NumberParser):
    """The last number of the "the answer is ..." sentence, else the last number (the paper's)."""

    name = "number-answer"

    def parse(self, text: str) -> float | None:
        match = ANSWER_CLAUSE.search(text)
        if match:
            found = super().parse(match.group(1))
            if found is not None:
                return found
        return super().parse(text)


class AnswerLetterParser(LetterParser):
    """The letter after "the answer is", else "(C)", else a lone A-E; never the A of "Answer"."""

    name = "letter-answer"

    def parse(self, text: str) -> str | None:
        for pattern in (ANSWER_LETTER, PAREN_LETTER, LONE_LETTER):
            match = pattern.search(text)
            if match:
                return match.group(1)
        return None


class AnswerChoiceParser(ChoiceParser):
    """The word after "the correct answer is", else the first whole answer word, any case."""

    name = "choice-answer"

    def parse(self, text: str) -> str | None:
        canonical = {c.lower(): c for c in self.choices}
        words = "|".join(map(re.escape, self.choices))
        for pattern in (rf"correct answer is\s*:?\s*({words})\b", rf"\b({words})\b"):
            match = re.search(pattern, text, re.IGNORECASE)
            if match:
                return canonical[match.group(1).lower()]
        return None

    def is_correct(self, prediction: str | None, gold: str) -> bool:
        return prediction is not None and prediction.lower() == gold.strip().lower()
