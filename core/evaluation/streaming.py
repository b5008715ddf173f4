"""Every item of an evaluation entry through one continuous batcher
(:class:`.continuous.ContinuousBatcher`), where :func:`.generation.generation_path` says
``continuous``: the prompts go in in the order given (the runner's: longest first), up to
``decoding.batch_size`` rows run at once, and a finished row's slot goes to the next prompt at the
next step, so no row waits for the slowest of a batch (length-sorted batches run until their
slowest row ends). Each step is :mod:`.decode`'s greedy step, so a row gets the tokens it gets
alone, and the same text and token count through :func:`.generation.finish`.

Stop strings (``decoding.stop``): each row's streamer decodes the row's last few tokens (the
prompt's included) after every token and ends the row when that token completed a stop string,
as transformers' ``stop_strings`` criterion does in ``generate``; :func:`.generation.finish` cuts
the text as on the batched path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lladapt.evaluation.continuous import ContinuousBatcher, Row
from lladapt.evaluation.generation import (
    Decoding,
    Generated,
    finish,
    generation_config,
    stop_token_ids,
)

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

__all__ = ["SharedStream", "StopStrings", "generate_stream", "shared_prefix"]

#: tokens decoded before the shortest window that can hold a stop string (one character a token
#: at worst): a window's first token may decode differently (a leading space dropped, a byte of a
#: character cut).
MARGIN = 4
#: the fewest tokens worth prefilling once for every prompt (below it, one more forward per entry
#: costs about what it saves).
MIN_PREFIX = 8


class StopStrings:
    """A row's streamer (transformers' ``put``/``end``): asks the row to stop (at once, by
    :meth:`.continuous.Row.accept`) when the token just put completed one of ``stop``, i.e. a stop
    string ends in that token's text. Only the last ``longest stop + MARGIN`` tokens are decoded;
    they start in the prompt, so a stop string that begins in the prompt counts, as in
    ``generate``."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: Sequence[str], prompt_ids: Sequence[int]):
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.look = max((len(s) for s in self.stop), default=0) + MARGIN
        self.ids = list(prompt_ids[-self.look :])
        self.row: Row | None = None

    def put(self, value: Any) -> None:
        self.ids += [int(t) for t in value.reshape(-1).tolist()]
        del self.ids[: -(self.look + 1)]
        if self.row is not None and self.completed():
            self.row.stop("stop")

    def end(self) -> None:
        pass

    def completed(self) -> bool:
        """Whether a stop string ends in the last token's text."""
        text = self.tokenizer.decode(self.ids)
        found = [s for s in self.stop if s in text]
        if not found:
            return False
        before = len(self.tokenizer.decode(self.ids[:-1]))
        return any(text.rfind(s) + len(s) > before for s in found)


def _row(tokenizer: PreTrainedTokenizerBase, prompt_ids: Sequence[int], decoding: Decoding,
         stops: Sequence[int], prefix_ids: Sequence[int]) -> Row:
    row = Row(prompt_ids, decoding.max_new_tokens, stop_ids=stops, prefix_ids=prefix_ids)
    if any(decoding.stop):
        watch = StopStrings(tokenizer, decoding.stop, prompt_ids)
        row.streamer, watch.row = watch, row
    return row


def _generated(tokenizer: PreTrainedTokenizerBase, row: Row, stops: Sequence[int], decoding: Decoding) -> Generated:
    if row.finish_reason == "error":
        raise row.error if row.error is not None else RuntimeError("generation failed")
    return finish(tokenizer, row.tokens, stops, decoding.stop)


def shared_prefix(prompts: Sequence[Sequence[int]], minimum: int = MIN_PREFIX) -> tuple[int, ...]:
    """The token ids every one of ``prompts`` starts with (a template's fixed opening), cut so that
    each prompt goes on past it; empty when fewer than two prompts share ``minimum`` tokens."""
    if len(prompts) < 2:
        return ()
    first, cut = prompts[0], min(len(p) for p in prompts) - 1
    for prompt in prompts[1:]:
        cut = next((i for i in range(cut) if prompt[i] != first[i]), cut)
    return tuple(first[:cut]) if cut >= minimum else ()


@dataclass
class _Feed:
    """One key's prompts: those waiting, and the rows that ended and were not yet asked for."""

    decoding: Decoding
    prefix_ids: tuple[int, ...]
    waiting: deque[tuple[int, Sequence[int]]]
    ended: list[tuple[int, Row]] = field(default_factory=list)


class SharedStream:
    """The prompts of several keys (evaluation entries) through one continuous batcher, key
    after key: once a key's last prompts are running, the slots they free go to the next key's
    first prompts, so that only the last key ends on a draining batch (each entry's last rows,
    up to ``max_new_tokens`` long, would otherwise run with ever fewer rows beside them). A key's
    rows that end before :meth:`finished` asks for them are kept until it does.

    ``model``: in eval mode, its adapter merged by the caller where it can be
    (:func:`.runner.prepared`); a base model or a module adapter, on the ``continuous`` path
    (:func:`.generation.generation_path`) for every key's decoding."""

    def __init__(self, model: Any, tokenizer: PreTrainedTokenizerBase, decoding: Decoding):
        from lladapt.evaluation.decode import _hf_model

        self.tokenizer = tokenizer
        self.stops = stop_token_ids(model, tokenizer)
        pad = generation_config(model, tokenizer, decoding).pad_token_id
        self.batcher = ContinuousBatcher(_hf_model(model), max_rows=decoding.batch_size, pad_id=pad or 0)
        self._feeds: dict[Hashable, _Feed] = {}
        self._running: list[tuple[_Feed, int, Row]] = []

    def add(self, key: Hashable, prompts: Sequence[tuple[int, Sequence[int]]], decoding: Decoding,
            prefix_ids: Sequence[int] = ()) -> None:
        """Queue ``key``'s ``(index, prompt_ids)`` after the keys added before it. ``prompt_ids``:
        the prompt's token ids as the tokenizer encodes it alone; the prompts that start with
        ``prefix_ids`` share its keys and values, computed once."""
        if key in self._feeds:
            raise ValueError(f"{key!r} is already in the stream")
        self._feeds[key] = _Feed(decoding, tuple(prefix_ids), deque(prompts))

    def __contains__(self, key: Hashable) -> bool:
        return key in self._feeds

    def finished(self, key: Hashable) -> Iterator[list[tuple[int, Generated]]]:
        """``(index, Generated)`` for each of ``key``'s prompts as its row finishes: one list after
        each step that finished some (at once for those that finished before), until all have."""
        feed = self._feeds[key]
        while feed.ended or feed.waiting or any(mine is feed for mine, _, _ in self._running):
            if not feed.ended:
                self._step()
                continue
            ended, feed.ended = feed.ended, []
            yield [(index, _generated(self.tokenizer, row, self.stops, feed.decoding)) for index, row in ended]
        del self._feeds[key]

    def _step(self) -> None:
        """Fill the free slots with the next prompts (in the keys' order), run one step, and
        hand the rows that ended to their keys."""
        for feed in self._feeds.values():
            while feed.waiting and len(self._running) < self.batcher.max_rows:  # a free slot takes the next prompt
                index, prompt_ids = feed.waiting.popleft()
                row = _row(self.tokenizer, prompt_ids, feed.decoding, self.stops, feed.prefix_ids)
                self._running.append((feed, index, row))
                self.batcher.submit(row)
        self.batcher.step()
        for feed, index, row in self._running:
            if row.finished:
                feed.ended.append((index, row))
        self._running = [running for running in self._running if not running[2].finished]


def generate_stream(
    model: Any, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[tuple[int, Sequence[int]]],
    decoding: Decoding, *, prefix_ids: Sequence[int] = (),
) -> Iterator[list[tuple[int, Generated]]]:
    """``(index, Generated)`` for each ``(index, prompt_ids)`` of ``prompts`` as its row finishes:
    one list after each step that finished some rows (a :class:`SharedStream` of one key).
    ``prompt_ids``: the prompt's token ids as the tokenizer encodes it alone (the unpadded row of
    the left-padded batch the batched path encodes). ``model``: in eval mode, its adapter merged
    by the caller where it can be (:func:`.runner.prepared`); a base model or a module adapter.
    The prompts that start with ``prefix_ids`` share its keys and values, computed once."""
    stream = SharedStream(model, tokenizer, decoding)
    stream.add(None, prompts, decoding, prefix_ids)
    yield from stream.finished(None)
