"""Continuous (iteration-level) batching: a decode loop over the rows that are running, with one
KV cache, where new rows join between two steps instead of waiting for the batch to finish.

Each :meth:`ContinuousBatcher.step` (1) drops rows that were asked to stop (a client gone), (2)
prefills the rows waiting (one left-padded batch, as the evaluator does) and copies their KV cache
into the running one (``hf_compat.RowCache``: preallocated slots, the shorter side masked on the
left), (3) runs one decode step for every running row, its keys written in place, and (4) drops
the rows that finished (the last rows move into their slots) and the columns that are padding in
every row left. Only new rows and moved rows are copied, never the whole cache: transformers'
``DynamicCache`` copies it at every step.

Each step is :mod:`.decode`'s greedy step (the new token, the whole attention mask, position ids
counted from the mask, ``logits_to_keep=1``, float32 logits), so a greedy row gets the tokens it
gets alone. Sampling rows go through transformers' own logits warpers (temperature, top-k,
top-p, in ``generate``'s order) and a generator of their own (``seed``). A ``select_rows``
callback hears the slot of every row before each forward: several adapters gated per row
(:mod:`lladapt.adapters.rows`) share the step.

Tokens go to each row's streamer through transformers' streamer protocol (``put`` a tensor of
new ids, ``end``), so a ``TextStreamer`` or ``TextIteratorStreamer`` can listen. Used for module
adapters and base models whose forward is transformers' own (as :mod:`.decode`); prefix and prompt
tuning rewrite the forward's arguments and go through ``generate``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lladapt.common.hf_compat import (
    RowCache,
    cache_argument,
    cache_holding,
    forward_parameters,
    output_cache,
    plain_layer_tensors,
)
from lladapt.evaluation.decode import positions

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["ContinuousBatcher", "Row", "Sampling", "left_padded"]


@dataclass(frozen=True)
class Sampling:
    """How a row picks its tokens: greedy when ``temperature`` is 0, else sampled after
    transformers' warpers (``top_k`` 0: off; ``top_p`` 1: off) with its own ``seed``."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def configure(self, config: Any) -> Any:
        """These settings on a transformers ``GenerationConfig`` (for ``generate``), in place."""
        if not self.greedy:
            config.update(do_sample=True, temperature=self.temperature, top_p=self.top_p,
                          top_k=self.top_k)
        return config

    def processors(self) -> Any:
        """transformers' warpers for these settings, in ``generate``'s order."""
        from transformers import (
            LogitsProcessorList,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        warpers = LogitsProcessorList()
        if self.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k:
            warpers.append(TopKLogitsWarper(self.top_k))
        if self.top_p < 1.0:
            warpers.append(TopPLogitsWarper(self.top_p))
        return warpers


class Row:
    """One request: its prompt ids, its limits, its adapter slot and where its tokens go.

    ``prefix_ids``: the opening this row may share with others, whose keys and values the batcher
    computes once (rows of several evaluation entries, each with its own, share one batcher).
    ``tokens`` holds what was generated (the stop token included); ``finish_reason`` is ``stop``
    (a stop token, or a stop the streamer asked for), ``length``, ``cancelled`` or ``error`` once
    the row ended, and ``done`` is set then. Any thread may call :meth:`stop`."""

    def __init__(self, prompt_ids: Sequence[int], max_new_tokens: int, *, stop_ids: Iterable[int] = (),
                 sampling: Sampling = Sampling(), slot: int = -1, streamer: Any = None,
                 prefix_ids: Sequence[int] = ()):
        self.prompt_ids = list(prompt_ids)
        self.prefix_ids = tuple(prefix_ids)
        self.max_new_tokens = max_new_tokens
        self.stop_ids = frozenset(stop_ids)
        self.sampling = sampling
        self.slot = slot
        self.streamer = streamer
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.asked: str | None = None
        self._processors: Any = None
        self._generator: Any = None

    def stop(self, reason: str = "stop") -> None:
        """End the row at the next step (a stop string seen, a client gone)."""
        self.asked = self.asked or reason

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def asked_to_stop(self) -> bool:
        return self.asked is not None

    def accept(self, token: int) -> bool:
        """Take one generated token; True when the row has finished."""
        import torch

        self.tokens.append(token)
        if token in self.stop_ids:
            self.finish("stop")
        else:
            if self.streamer is not None:
                self.streamer.put(torch.tensor([token]))
            if self.asked is not None:
                self.finish(self.asked)
            elif len(self.tokens) >= self.max_new_tokens:
                self.finish("length")
        return self.finished

    def finish(self, reason: str, error: BaseException | None = None) -> None:
        if self.finished:
            return
        self.finish_reason, self.error = reason, error
        try:
            if self.streamer is not None:
                self.streamer.end()
        finally:
            self.done.set()

    def pick(self, logits: torch.Tensor) -> int:
        """This row's next token from its float32 logits (one row)."""
        import torch

        if self.sampling.greedy:
            return int(logits.argmax(-1))
        if self._processors is None:
            self._processors = self.sampling.processors()
            self._generator = torch.Generator(device=logits.device)
            if self.sampling.seed is None:
                self._generator.seed()
            else:
                self._generator.manual_seed(self.sampling.seed)
        seen = torch.tensor([self.prompt_ids + self.tokens], device=logits.device)
        scores = self._processors(seen, logits[None, :])
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self._generator))


def left_padded(prompts: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of ``prompts``, padded on the left."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        if prompt:
            ids[i, width - len(prompt):] = torch.tensor(prompt)
            mask[i, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


class ContinuousBatcher:
    """Rows in, tokens out, one step at a time (see the module's docstring). ``model`` is a
    transformers causal LM (hooks on its modules allowed). Not thread-safe except
    :meth:`submit`: one thread calls :meth:`step`."""

    def __init__(self, model: Any, *, max_rows: int = 32, pad_id: int = 0,
                 select_rows: Callable[[torch.Tensor], None] | None = None):
        from lladapt.evaluation.generation import model_device

        self.model = model
        self.cache_name = cache_argument(model)
        if self.cache_name is None:
            raise ValueError(f"{type(model).__name__}.forward takes no KV cache")
        self.extra = {"logits_to_keep": 1} if "logits_to_keep" in forward_parameters(model) else {}
        self.max_rows = max_rows
        self.pad_id = pad_id
        self.per_row = select_rows is not None
        self.select_rows = select_rows or (lambda slots: None)
        self.device = model_device(model)
        self.rows: list[Row] = []
        self._waiting: deque[Row] = deque()
        self._lock = threading.Lock()
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._last: torch.Tensor | None = None
        self._prefixes: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def submit(self, row: Row) -> None:
        with self._lock:
            self._waiting.append(row)

    @property
    def busy(self) -> bool:
        return bool(self.rows or self._waiting)

    def step(self) -> None:
        """Admit the waiting rows, then one decode step for all; a failure ends every row
        involved with ``error`` (the batcher stays usable)."""
        import torch

        self._keep([i for i, row in enumerate(self.rows) if not row.asked_to_stop],
                   ended="cancelled")
        with self._lock:
            room = max(self.max_rows - len(self.rows), 0)
            new = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
        for row in new:
            if row.asked_to_stop:
                row.finish(row.asked or "cancelled")
        new = [row for row in new if not row.finished]
        try:
            with torch.inference_mode():
                if new:
                    self._admit(new)
                if self.rows:
                    self._decode()
        except Exception as error:  # noqa: BLE001 - handed to each row's owner
            for row in [*self.rows, *new]:
                row.finish("error", error)
            self.rows, self._cache, self._mask, self._last = [], None, None, None

    def _call(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> Any:
        """The model's forward over ``ids`` at ``positions``, its keys added to ``cache``."""
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                          **{self.cache_name: cache}, **self.extra)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any,
                 rows: Sequence[Row]) -> tuple[Any, list[int]]:
        """:meth:`_call` for ``rows`` (their adapter slots selected first) and each row's next token."""
        import torch

        self.select_rows(torch.tensor([row.slot for row in rows], device=self.device))
        out = self._call(ids, mask, positions, cache)
        logits = out.logits[:, -1, :].to(dtype=torch.float32)
        if all(row.sampling.greedy for row in rows):  # one argmax and one copy for the batch
            return output_cache(out), logits.argmax(-1).tolist()
        return output_cache(out), [row.pick(logits[i]) for i, row in enumerate(rows)]

    def _admit(self, new: list[Row]) -> None:
        """Prefill ``new``, one forward per shared prefix: the rows whose prompt goes on past
        their prefix start from its keys (computed once), the others from nothing."""
        groups: dict[tuple[int, ...], list[Row]] = {}
        for row in new:
            prefix = row.prefix_ids
            starts = len(row.prompt_ids) > len(prefix) and tuple(row.prompt_ids[: len(prefix)]) == prefix
            groups.setdefault(prefix if starts else (), []).append(row)
        for prefix, group in groups.items():  # in the order of their first rows
            self._prefill(group, prefix)

    def _prefill(self, new: list[Row], prefix: tuple[int, ...]) -> None:
        """Prefill ``new``, whose prompts start with ``prefix`` (empty: none), and add the rows
        still running to the batch."""
        import torch
        from transformers import DynamicCache

        start = len(prefix)
        ids, mask = left_padded([row.prompt_ids[start:] for row in new], self.pad_id, self.device)
        if start:
            cache = cache_holding(self.model.config, self._prefix_tensors(prefix), len(new))
            mask = torch.cat([mask.new_ones((len(new), start)), mask], dim=-1)
        else:
            cache = DynamicCache(config=self.model.config)
        cache, tokens = self._forward(ids, mask, positions(mask)[:, start:], cache, new)
        live = [i for i, (row, token) in enumerate(zip(new, tokens, strict=True)) if not row.accept(token)]
        if not live:
            return
        index = torch.tensor(live, device=self.device)
        if len(live) < len(new):
            cache.batch_select_indices(index)
        mask, last = mask[index], torch.tensor(tokens, device=self.device)[index]
        if self._cache is None:
            self._cache = RowCache(self.model.config, self.max_rows)
        self._cache.add(cache)
        if not self.rows:
            self._mask, self._last = mask, last
        else:
            width = self._cache.width
            pad = torch.nn.functional.pad
            self._mask = torch.cat([pad(self._mask, (width - self._mask.shape[1], 0)),
                                    pad(mask, (width - mask.shape[1], 0))])
            self._last = torch.cat([self._last, last])
        self.rows += [new[i] for i in live]

    def _prefix_tensors(self, prefix: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's keys and values of ``prefix``, computed at its first use."""
        import torch
        from transformers import DynamicCache

        if self.per_row:
            raise ValueError("a shared prefix is computed once for one model: no per-row adapters (select_rows)")
        if prefix not in self._prefixes:
            ids = torch.tensor([prefix], device=self.device)
            mask = torch.ones_like(ids)
            out = self._call(ids, mask, positions(mask), DynamicCache(config=self.model.config))
            self._prefixes[prefix] = plain_layer_tensors(output_cache(out))
        return self._prefixes[prefix]

    def _decode(self) -> None:
        import torch

        mask = torch.cat([self._mask, self._mask.new_ones((self._mask.shape[0], 1))], dim=-1)
        self._cache.reserve(1)
        _, tokens = self._forward(self._last[:, None], mask, self._mask.sum(-1, keepdim=True),
                                  self._cache.cache, self.rows)
        self._cache.advance(1)
        self._mask, self._last = mask, torch.tensor(tokens, device=self.device)
        self._keep([i for i, (row, token) in enumerate(zip(self.rows, tokens, strict=True))
                    if not row.accept(token)])

    def _keep(self, live: list[int], ended: str | None = None) -> None:
        """Keep only the rows at ``live`` (the others end with ``ended``, unless they have),
        then drop the leading columns that are padding in every row left."""
        import torch

        if len(live) == len(self.rows):
            return
        for i, row in enumerate(self.rows):
            if i not in live and ended is not None:
                row.finish(row.asked or ended)
        if not live:
            self.rows, self._cache, self._mask, self._last = [], None, None, None
            return
        order = self._cache.keep(live)
        index = torch.tensor(order, device=self.device)
        self.rows = [self.rows[i] for i in order]
        self._mask, self._last = self._mask[index], self._last[index]
        empty = int((self._mask.sum(0) == 0).long().cumprod(0).sum())
        if empty:
            self._cache.drop_left(empty)
            self._mask = self._mask[:, empty:]
