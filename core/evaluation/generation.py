"""Batched generation whose answers do not depend on the batch: left padding, the attention mask,
position ids counted from the mask (transformers derives them from the mask during ``generate``),
and the model's own stop tokens.

Why not ``eos_token_id=tokenizer.eos_token_id``: it replaces the model's generation config's list
of stop tokens (chat models have several, e.g. ``<|im_end|>`` and ``<|endoftext|>``), so such a
model runs on to the token limit. We read the stop tokens from ``model.generation_config`` and
fall back to the tokenizer's only when the model names none.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import GenerationConfig, PreTrainedTokenizerBase


@dataclass(frozen=True)
class Decoding:
    """How to generate. ``fast`` (default) and ``paper`` (:meth:`paper`) are the two protocols."""

    max_new_tokens: int
    num_beams: int = 1
    batch_size: int = 8
    use_cache: bool = True
    #: build batches from prompts of similar length (results keep the original order).
    sort_by_length: bool = True
    #: strings that end a response (cut there; the row stops generating).
    stop: tuple[str, ...] = ()
    protocol: str = "fast"
    #: greedy decoding that drops finished rows from the batch (:mod:`.decode`) where it gives
    #: ``generate``'s answers; else ``generate``.
    compact: bool = True
    #: with ``compact``, one process and a model :mod:`.decode` can run: every item through one
    #: continuous batcher (:mod:`.streaming`), a finished row's slot taken by the next prompt;
    #: False keeps length-sorted batches. Cannot change an answer (not in :meth:`answer_settings`).
    continuous: bool = True

    @classmethod
    def paper(cls, max_new_tokens: int, stop: Sequence[str] = ()) -> Decoding:
        """The paper code's ``evaluate.py``: one item at a time, beam search with 4 beams, no KV
        cache (its ``temperature=0.1, top_p=0.75, top_k=40`` have no effect without sampling)."""
        return cls(
            max_new_tokens=max_new_tokens, num_beams=4, batch_size=1, use_cache=False,
            sort_by_length=False, stop=tuple(stop), protocol="paper", compact=False,
        )

    def answer_settings(self) -> dict[str, Any]:
        """The settings that can change an answer (batch size, cache and order cannot)."""
        return {"protocol": self.protocol, "max_new_tokens": self.max_new_tokens,
                "num_beams": self.num_beams, "stop": list(self.stop)}


@dataclass
class Generated:
    """One row's continuation: its text (stop token and anything after a stop string removed)
    and how many tokens the model generated for it (up to and including the token that stopped
    it; padding after a finished row is never counted, whatever the pad token is)."""

    text: str
    tokens: int
    token_ids: list[int] = field(default_factory=list, repr=False)


def stop_token_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The model's stop tokens (its generation config's ``eos_token_id``, an int or a list),
    else the tokenizer's EOS."""
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None) if config is not None else None
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(e) for e in eos]


def _decoding_config(model: Any, decoding: Decoding) -> GenerationConfig:
    """The model's generation config with ``decoding``'s greedy (or beam) settings on top."""
    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None)
    config = copy.deepcopy(base) if base is not None else GenerationConfig()
    # sampling knobs left in a model's config make transformers warn when do_sample is False.
    config.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    config.update(
        max_new_tokens=decoding.max_new_tokens, num_beams=decoding.num_beams,
        use_cache=decoding.use_cache, num_return_sequences=1, max_length=None,
    )
    return config


def generation_config(model: Any, tokenizer: PreTrainedTokenizerBase, decoding: Decoding) -> GenerationConfig:
    """The model's generation config with greedy (or beam) decoding settings on top; the stop
    tokens stay the model's own."""
    config = _decoding_config(model, decoding)
    stops = stop_token_ids(model, tokenizer)
    config.eos_token_id = stops or None
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops or [None])[0]
    if decoding.stop:
        config.stop_strings = list(decoding.stop)
    return config


def generation_path(model: Any, decoding: Decoding) -> str:
    """How the evaluator generates with ``decoding`` on ``model`` (in eval mode, merged or not):

    - ``continuous``: every item through one continuous batcher (:mod:`.streaming`); needs
      ``compact`` and ``continuous``, one process, and what :func:`.decode.can_compact` asks
      (greedy, one beam, KV cache, a neutral generation config, transformers' own forward);
      stop strings are checked by the batcher's rows;
    - ``compacting``: length-sorted batches, finished rows dropped (:mod:`.decode`): the same
      without ``continuous`` (or with several processes) and without stop strings;
    - ``generate``: length-sorted batches through transformers' ``generate`` (beam search, prefix
      and prompt tuning, stop strings outside the continuous path, ``compact`` off)."""
    from lladapt.common.processes import processes
    from lladapt.evaluation.decode import can_compact

    if not decoding.compact or decoding.max_new_tokens < 1:
        return "generate"
    if not can_compact(model, _decoding_config(model, decoding)):  # stop strings left aside
        return "generate"
    if decoding.continuous and processes().world == 1:
        return "continuous"
    return "generate" if decoding.stop else "compacting"


def model_device(model: torch.nn.Module) -> torch.device:
    import torch

    return next((p.device for p in model.parameters() if p.device.type != "meta"), torch.device("cpu"))


def encode_left_padded(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], device: Any) -> dict:
    """Token ids and attention mask, padded on the left (a generated token must follow its own
    prompt's last token in every row)."""
    from lladapt.models.tokenizer import padding_for

    with padding_for(tokenizer, "generate"):
        return tokenizer(list(prompts), return_tensors="pt", padding=True).to(device)


def finish(
    tokenizer: PreTrainedTokenizerBase, row: Sequence[int], stops: Sequence[int], stop_strings: Sequence[str]
) -> Generated:
    """Cut one generated row at its first stop token, then at its first stop string."""
    ids = list(row)
    end = next((i for i, t in enumerate(ids) if t in stops), None)
    tokens = len(ids) if end is None else end + 1
    kept = ids[: tokens if end is None else end]
    text = tokenizer.decode(kept, skip_special_tokens=True)
    cut = _first_stop(text, stop_strings)
    if cut is not None:
        text = text[:cut]
        # the token that completed the stop string is the last one generated for this row.
        tokens = next(
            (k for k in range(1, len(kept) + 1)
             if _first_stop(tokenizer.decode(kept[:k], skip_special_tokens=True), stop_strings) is not None),
            tokens,
        )
    return Generated(text, tokens, ids[:tokens])


def _first_stop(text: str, stop_strings: Sequence[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    return min(found) if found else None


def generate_batch(
    model: Any, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], decoding: Decoding
) -> list[Generated]:
    """Generate for one batch of prompts (the model must be in eval mode)."""
    import torch

    from lladapt.evaluation.decode import can_compact, greedy_compacting

    config = generation_config(model, tokenizer, decoding)
    enc = encode_left_padded(tokenizer, prompts, model_device(model))
    stops = stop_token_ids(model, tokenizer)
    if decoding.compact and can_compact(model, config):
        new = greedy_compacting(model, enc["input_ids"], enc["attention_mask"], decoding.max_new_tokens, stops)
    else:
        extra = {"tokenizer": tokenizer} if decoding.stop else {}
        with torch.inference_mode():
            out = model.generate(**enc, generation_config=config, **extra)
        new = out[:, enc["input_ids"].shape[1] :].tolist()
    return [finish(tokenizer, row, stops, decoding.stop) for row in new]
