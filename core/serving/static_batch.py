"""Rows that cannot join the continuous batch, through transformers' ``generate`` as one static
batch: adapters that rewrite the forward's arguments (prefix and prompt tuning) and beam search.

The rows share their settings (the caller groups them). Each row's tokens reach its streamer as
``generate`` makes them (a streamer that hands each row its own column; without beams), and a
stopping criterion ends the rows that were asked to stop (a stop string, a client gone)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from lladapt.evaluation.continuous import Row, left_padded
from lladapt.evaluation.generation import Decoding, generation_config, model_device

__all__ = ["generate_rows"]


class _Columns(BaseStreamer):
    """``generate``'s streamer: the first ``put`` is the prompts, then one token per row."""

    def __init__(self, rows: Sequence[Row]):
        self.rows = rows
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for row, token in zip(self.rows, value.reshape(-1).tolist(), strict=True):
            if not row.finished:
                row.accept(int(token))

    def end(self) -> None:
        pass


class _Ended(StoppingCriteria):
    def __init__(self, rows: Sequence[Row]):
        self.rows = rows

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.tensor([row.finished or row.asked_to_stop for row in self.rows],
                            device=input_ids.device)


def generate_rows(model: Any, tokenizer: Any, rows: Sequence[Row], num_beams: int = 1, pad_id: int = 0) -> None:
    """Generate for ``rows`` (same sampling, token limit and adapter) in one ``generate`` call;
    every row has finished when this returns."""
    import torch

    first = rows[0]
    ids, mask = left_padded([row.prompt_ids for row in rows], pad_id, model_device(model))
    config = generation_config(model, tokenizer, Decoding(max_new_tokens=first.max_new_tokens,
                                                          num_beams=num_beams, compact=False))
    first.sampling.configure(config)
    stream = num_beams == 1
    if first.sampling.seed is not None:
        torch.manual_seed(first.sampling.seed)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                             streamer=_Columns(rows) if stream else None,
                             stopping_criteria=StoppingCriteriaList([_Ended(rows)]) if stream else None)
    for row, generated in zip(rows, out[:, ids.shape[1]:].tolist(), strict=True):
        for token in generated[len(row.tokens):]:
            if row.finished or row.accept(token):
                break
        row.finish(row.asked or "length")
