"""Greedy decoding that stops computing rows once they finish.

transformers' ``generate`` keeps every row of a batch in every forward pass until the last row
stops: a row that wrote EOS after 10 tokens is padded, and computed, for as long as its slowest
neighbour runs (256 tokens on math sets). Measured on SmolLM2-135M with AddSub prompts, one batch
of 8 answers took 30, 91, 48, 10, 29, 114, 256 and 256 tokens: 2,048 row-steps computed for 834
tokens wanted. This loop is ``generate``'s greedy search (same inputs per step: the new token, the
whole attention mask, position ids from the mask, ``logits_to_keep=1``, float32 argmax) except
that finished rows leave the batch and the KV cache (``Cache.batch_select_indices``).

Used only where it gives ``generate``'s answers: greedy, with the KV cache, no stop strings, a
generation config without logits processors (repetition penalty, forced or suppressed tokens,
minimum lengths...), and a model whose forward is transformers' own (a base model, or module
adapters such as LoRA or bottlenecks; prefix and prompt tuning rewrite the forward's arguments
and go through ``generate``). Everything else uses ``generate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lladapt.common.hf_compat import cache_argument, forward_parameters, output_cache

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import GenerationConfig

#: generation-config fields that add a logits processor or a stopping rule when set to anything
#: but these values; the loop implements none of them.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "repetition_penalty": (None, 1.0), "encoder_repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0), "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,), "min_length": (None, 0), "min_new_tokens": (None, 0),
    "sequence_bias": (None,), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
    "suppress_tokens": (None,), "begin_suppress_tokens": (None,), "renormalize_logits": (None, False),
    "exponential_decay_length_penalty": (None,), "guidance_scale": (None, 1.0),
    "stop_strings": (None,), "max_time": (None,), "epsilon_cutoff": (None, 0.0), "eta_cutoff": (None, 0.0),
    "diversity_penalty": (None, 0.0), "watermarking_config": (None,), "assistant_model": (None,),
    "prompt_lookup_num_tokens": (None,),
}


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch, counted from each row's first real token (0 on the
    padding), as ``generate`` counts them."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def _hf_model(model: Any) -> Any:
    """The transformers model under an lladapt ``AdaptedModel`` (module adapters only)."""
    adapter = getattr(model, "adapter", None)
    if adapter is not None:
        return model.base_model if getattr(adapter, "site_kind", None) == "module" else None
    return model


def can_compact(model: Any, config: GenerationConfig) -> bool:
    """Whether :func:`greedy_compacting` gives what ``generate`` would with ``config``."""
    hf = _hf_model(model)
    if hf is None or cache_argument(hf) is None or not hasattr(hf, "config"):
        return False
    if config.num_beams != 1 or config.do_sample or not config.use_cache or config.num_return_sequences != 1:
        return False
    return all(getattr(config, name, None) in neutral for name, neutral in _NEUTRAL.items())


def greedy_compacting(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
    stop_ids: Sequence[int],
) -> list[list[int]]:
    """Greedy continuations of a left-padded batch, each up to and including its stop token."""
    import torch
    from transformers import DynamicCache

    hf = _hf_model(model)
    cache_name = cache_argument(hf)
    extra = {"logits_to_keep": 1} if "logits_to_keep" in forward_parameters(hf) else {}
    stops = torch.tensor(list(stop_ids), device=input_ids.device, dtype=torch.long)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)  # original row of each live row
    out: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
    mask = attention_mask.long()
    position_ids = positions(mask)
    step_ids = input_ids
    cache = DynamicCache(config=hf.config)
    with torch.inference_mode():
        for step in range(max_new_tokens):
            outputs = hf(input_ids=step_ids, attention_mask=mask, position_ids=position_ids,
                         use_cache=True, **{cache_name: cache}, **extra)
            cache = output_cache(outputs)
            tokens = outputs.logits[:, -1, :].to(dtype=torch.float32).argmax(dim=-1)
            for row, token in zip(rows.tolist(), tokens.tolist(), strict=True):
                out[row].append(token)
            if step == max_new_tokens - 1:
                break
            live = ~torch.isin(tokens, stops) if len(stop_ids) else torch.ones_like(tokens, dtype=torch.bool)
            if not bool(live.any()):
                break
            if not bool(live.all()):
                keep = live.nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                rows, tokens, mask, position_ids = rows[keep], tokens[keep], mask[keep], position_ids[keep]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
            position_ids = position_ids[:, -1:] + 1
            step_ids = tokens[:, None]
    return out
