"""Log-likelihood scoring of multiple-choice items (``eval.scoring: loglik``), as
lm-evaluation-harness scores ARC, PIQA, HellaSwag and WinoGrande: the answer is the choice whose
continuation of the prompt is most likely (optionally per continuation token). No generation,
no parsing: nothing goes unparsed.

Each (prompt, continuation) pair is the prompt's token ids followed by the continuation's own
token ids (no special tokens), so the prompt is tokenized the same way for every choice. Pairs of
all items are batched by length (right padding: positions count from 0 in every row)."""

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
    given what precedes them, and the number of those tokens."""
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
