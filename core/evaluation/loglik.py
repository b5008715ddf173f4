"""Log-likelihood scoring of multiple-choice items (``eval.scoring: loglik``), as
lm-evaluation-harness scores ARC, PIQA, HellaSwag and WinoGrande: the answer is the choice whose
continuation of the prompt is most likely (optionally per continuation token). No generation,
no parsing: nothing goes unparsed.

Each (prompt, continuation) pair is the prompt's token ids followed by the continuation's own
token ids (no special tokens), so the prompt is tokenized the same way for every choice.

Where the model's forward is transformers' own (a base model or module adapters), the prompt an
item's choices share is computed once (:func:`shared_context_logliks`), and so are the tokens
its choices' texts begin with in common ("the correct answer is answer1" / "... answer2" differ
in their last token): a batch of distinct prompts, each followed by that common start, left
padded, fills a KV cache and gives the log-probabilities of the common tokens and of each
choice's first own token; where choices have more tokens of their own, the cache's rows are
repeated for each choice and one more pass over those (right padded) scores the rest. Only
continuation positions reach the output head and the log-softmax. Else (prefix and prompt tuning, which rewrite the forward's arguments)
each pair is scored whole, in length-sorted batches with right padding (:func:`whole_pair_logliks`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lladapt.evaluation.batching import length_sorted_batches
from lladapt.evaluation.generation import model_device

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase


def pair_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, continuation: str) -> tuple[list[int], int]:
    """Token ids of prompt + continuation, and how many of them are the continuation's."""
    context = tokenizer(prompt)["input_ids"]
    cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    return list(context) + list(cont), len(cont)


def continuation_logliks(
    model: Any, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]], batch_size: int
) -> list[tuple[float, int]]:
    """For each (prompt, continuation): the summed log-probability of the continuation's tokens
    given what precedes them, and the number of those tokens. ``batch_size``: distinct prompts
    per forward pass (shared path) or pairs per pass (whole-pair path)."""
    from lladapt.common.hf_compat import cache_argument
    from lladapt.evaluation.decode import _hf_model

    hf = _hf_model(model)
    if hf is not None and cache_argument(hf) is not None and hasattr(hf, "config"):
        return shared_context_logliks(hf, tokenizer, pairs, batch_size)
    return whole_pair_logliks(model, tokenizer, pairs, batch_size)


def _common_prefix(conts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every continuation shares, leaving each at least one of its own
    (choices such as "... answer1" / "... answer2" differ in their last token only)."""
    if not conts or not all(conts):
        return 0
    n = 0
    while n < min(len(c) for c in conts) - 1 and all(c[n] == conts[0][n] for c in conts):
        n += 1
    return n


def shared_context_logliks(
    model: Any, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]], batch_size: int
) -> list[tuple[float, int]]:
    """:func:`continuation_logliks` with each distinct prompt, and the tokens its choices' texts
    begin with in common, computed once (module docstring)."""
    groups: dict[str, list[int]] = {}
    for i, (prompt, _) in enumerate(pairs):
        groups.setdefault(prompt, []).append(i)
    prompts = list(groups)
    context_ids = tokenizer(prompts)["input_ids"] if prompts else []
    conts = [tokenizer(c, add_special_tokens=False)["input_ids"] for _, c in pairs]
    shared = [_common_prefix([conts[i] for i in groups[p]]) for p in prompts]
    contexts = [list(ids) + list(conts[groups[p][0]][:n]) for p, ids, n in zip(prompts, context_ids, shared, strict=True)]
    out: list[tuple[float, int]] = [(0.0, 0)] * len(pairs)
    for batch in length_sorted_batches(range(len(prompts)), [len(ids) for ids in contexts], batch_size):
        rows = [(p, i) for p in batch for i in groups[prompts[p]]]
        scores = _score_batch(model, tokenizer, [contexts[p] for p in batch], [shared[p] for p in batch],
                              [(batch.index(p), conts[i][shared[p]:]) for p, i in rows])
        for (_, i), score in zip(rows, scores, strict=True):
            out[i] = score
    return out


def _score_batch(model: Any, tokenizer: PreTrainedTokenizerBase, contexts: Sequence[Sequence[int]],
                 shared: Sequence[int], choices: Sequence[tuple[int, Sequence[int]]]) -> list[tuple[float, int]]:
    """Summed log-probabilities of each ``(context row, own continuation ids)`` of ``choices``
    after its context, whose last ``shared[row]`` tokens are the continuations' common start
    (scored too): the contexts in one left-padded pass (only the last ``max(shared) + 1``
    positions through the output head), then the choices' own tokens after the first in one
    right-padded pass over the cache, its rows repeated for each choice."""
    import torch

    from lladapt.common.hf_compat import forward_parameters, output_cache
    from lladapt.evaluation.continuous import left_padded
    from lladapt.evaluation.decode import positions

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model_device(model)
    ids, mask = left_padded(contexts, pad, device)
    window = max(shared) + 1
    keep = {"logits_to_keep": window} if "logits_to_keep" in forward_parameters(model) else {}
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=True, **keep)
        last = torch.log_softmax(out.logits[:, -window:, :].float(), dim=-1)
        common = [_tokens_logprob(last[r, window - 1 - n : window - 1], contexts[r][len(contexts[r]) - n :])
                  if n else 0.0 for r, n in enumerate(shared)]
        scores = [common[row] + float(last[row, -1, cont[0]]) if cont else 0.0 for row, cont in choices]
        if max(len(cont) for _, cont in choices) > 1:
            tails = _tails(model, output_cache(out), mask, choices, pad)
            scores = [a + b for a, b in zip(scores, tails, strict=True)]
    return [(score, shared[row] + len(cont)) for score, (row, cont) in zip(scores, choices, strict=True)]


def _tokens_logprob(logprobs: Any, targets: Sequence[int]) -> float:
    """Sum of ``logprobs[t, targets[t]]``."""
    import torch

    index = torch.tensor(list(targets), device=logprobs.device)[:, None]
    return float(logprobs.gather(1, index).sum())


def _tails(model: Any, cache: Any, mask: Any, choices: Sequence[tuple[int, Sequence[int]]], pad: int) -> list[float]:
    """Log-probabilities of each choice's own tokens after its first, over the contexts' cache
    (its rows repeated, one per choice; the choices right padded)."""
    import torch

    from lladapt.common.hf_compat import cache_argument

    device = mask.device
    rows = torch.tensor([row for row, _ in choices], device=device)
    cache.batch_select_indices(rows)
    width = max(len(cont) for _, cont in choices) - 1
    rest = torch.full((len(choices), width), pad, dtype=torch.long, device=device)
    rest_mask = torch.zeros_like(rest)
    for k, (_, cont) in enumerate(choices):
        rest[k, : len(cont) - 1] = torch.tensor(list(cont[:-1]), dtype=torch.long)
        rest_mask[k, : len(cont) - 1] = 1
    positions = mask[rows].sum(-1, keepdim=True) + torch.arange(width, device=device)
    logits = model(input_ids=rest, attention_mask=torch.cat([mask[rows], rest_mask], dim=-1),
                   position_ids=positions, use_cache=True, **{cache_argument(model): cache}).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return [_tokens_logprob(logprobs[k, : len(cont) - 1], cont[1:]) if len(cont) > 1 else 0.0
            for k, (_, cont) in enumerate(choices)]


def whole_pair_logliks(
    model: Any, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]], batch_size: int
) -> list[tuple[float, int]]:
    """:func:`continuation_logliks` scoring each pair whole (right padding: positions count from
    0 in every row)."""
    import torch

    encoded = [pair_ids(tokenizer, p, c) for p, c in pairs]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model_device(model)
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    batches = length_sorted_batches(range(len(encoded)), [len(ids) for ids, _ in encoded], batch_size)
    for batch in batches:
        width = max(len(encoded[i][0]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            seq = encoded[i][0]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1).cpu()
        for row, i in enumerate(batch):
            seq, n = encoded[i]
            if n == 0:
                out[i] = (0.0, 0)
                continue
            targets = torch.tensor(seq[len(seq) - n :])
            # the token at position t is predicted by the logits at t - 1.
            rows = logprobs[row, len(seq) - n - 1 : len(seq) - 1]
            out[i] = (float(rows.gather(1, targets[:, None]).sum()), n)
    return out


def pick(scores: Sequence[tuple[float, int]], normalize: bool) -> int:
    """Index of the best choice (the first on ties)."""
    values = [s / n if normalize and n else s for s, n in scores]
    return max(range(len(values)), key=lambda i: (values[i], -i))
