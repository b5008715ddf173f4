"""A row's text as it grows: a transformers streamer that decodes the generated tokens, cuts
them at the request's stop strings (and asks the row to stop there), and hands on the text that
can no longer change, so that the pieces streamed add up to exactly the text of the whole answer.

transformers' ``TextStreamer`` prints words as they complete but restarts its decoding after each
newline (a SentencePiece model can decode the next line's first piece differently alone), and
knows no stop strings. Here the whole row is decoded at each token and a piece is handed on only
when it extends what was handed on before; held back until the next token: an incomplete UTF-8
character (U+FFFD), trailing whitespace (a template's extraction may strip it) and a tail that
could begin a stop string.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from transformers.generation.streamers import BaseStreamer

__all__ = ["TextDeltas"]

#: what may still change at the end of a decoded text: whitespace, an incomplete character.
_TAIL = re.compile(r"[\s\ufffd]+$")


def _cut(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(found)], True) if found else (text, False)


def _unsettled(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters may still change: the longest tail that begins a stop."""
    return max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


class TextDeltas(BaseStreamer):
    """Streamer of one row: ``on_text(piece)`` for each settled piece, ``on_end()`` once.

    ``visible(text)`` turns the generated text (cut at the stops) into the answer (the raw text
    for completions; the template's response extraction for chat); :attr:`text` is the whole
    answer once ended. ``row`` (set by the owner) is asked to stop at a stop string."""

    def __init__(self, tokenizer: Any, *, stops: Sequence[str] = (),
                 visible: Callable[[str], str] = lambda text: text,
                 on_text: Callable[[str], None] = lambda piece: None,
                 on_end: Callable[[], None] = lambda: None):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.visible = visible
        self.on_text = on_text
        self.on_end = on_end
        self.row: Any = None
        self.ids: list[int] = []
        self.sent = ""
        self.text = ""

    def _decoded(self) -> tuple[str, bool]:
        return _cut(self.tokenizer.decode(self.ids, skip_special_tokens=True), self.stops)

    def put(self, value: Any) -> None:
        self.ids += [int(t) for t in value.reshape(-1).tolist()]
        raw, stopped = self._decoded()
        if stopped:
            if self.row is not None:
                self.row.stop("stop")
            return  # the rest is sent by end()
        held = _unsettled(raw, self.stops)
        settled = self.visible(raw[: len(raw) - held])
        self._send(_TAIL.sub("", settled))

    def _send(self, text: str) -> None:
        if len(text) > len(self.sent) and text.startswith(self.sent):
            piece, self.sent = text[len(self.sent):], text
            self.on_text(piece)

    def end(self) -> None:
        self.text = self.visible(self._decoded()[0])
        self._send(self.text)
        self.on_end()
