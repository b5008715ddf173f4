"""The causal-LM loss as a sum over label tokens, so the loop can normalise by the label tokens
of the whole accumulated batch (transformers' ``num_items_in_batch``) or per micro-batch.

:func:`chunked_summed_loss` is the same loss from the final hidden states: the output head is
applied only at positions that carry a label, a chunk of rows at a time, and the gradient with
respect to the hidden states is computed in the same pass, so no full-vocabulary logits
(positions x 49,152 for SmolLM2) are ever kept for backward (Liger-Kernel's fused linear
cross-entropy, in plain torch)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from lladapt.data.tokenization import IGNORE_INDEX, Encoded

if TYPE_CHECKING:  # pragma: no cover
    import torch


def label_tokens(example: Encoded) -> int:
    """Tokens of ``example`` that carry a loss (labels shift by one: the first never does)."""
    return sum(1 for label in example.labels[1:] if label != IGNORE_INDEX)


def summed_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of next-token cross-entropies over the label tokens. Adapters that prepend virtual
    tokens (prompt tuning) return longer logits: the last ``labels`` positions are the text's."""
    import torch.nn.functional as F

    logits = logits[:, -labels.shape[1]:, :]
    shifted = logits[:, :-1, :].float()
    return F.cross_entropy(
        shifted.reshape(-1, shifted.shape[-1]), labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )


def scale(n_label_tokens: int, step_tokens: int, step_micro_batches: int, normalization: str) -> float:
    """The factor that turns one micro-batch's summed loss into its share of the step's loss."""
    if normalization == "tokens":
        return 1.0 / max(1, step_tokens)
    return 1.0 / max(1, n_label_tokens) / step_micro_batches  # the paper code's mean of means


def total_label_tokens(examples: Sequence[Encoded]) -> int:
    return sum(label_tokens(e) for e in examples)


#: label rows per chunk of the fused head + cross-entropy: logits of 256 x 49,152 fp32 are 50 MB.
#: One SmolLM2 micro-batch of 4 x 256 tokens in bf16 peaked 150-430 MB lower than with 1,024-row
#: chunks (the chunk's logits, its bf16 copy and its gradient sit on top of every activation kept
#: for backward), in the same time.
CHUNK_ROWS = 256


def chunked_summed_loss(hidden: torch.Tensor, head: torch.nn.Linear, labels: torch.Tensor,
                        chunk_rows: int = CHUNK_ROWS,
                        cast: Callable[[torch.Tensor, torch.dtype], torch.Tensor] | None = None) -> torch.Tensor:
    """:func:`summed_loss` of ``head(hidden)`` without materialising the logits of every position
    (see the module docstring). Under CPU/CUDA autocast the head runs in the autocast dtype and the
    cross-entropy in fp32, as in the plain path; ``cast(tensor, dtype)`` casts the head's
    parameters there (default ``tensor.to(dtype)``: a caller may hold the cast for a whole run,
    :meth:`lladapt.training.precision.Precision.frozen_cast`)."""
    import torch

    hidden = hidden[:, -labels.shape[1]:, :][:, :-1, :]
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    rows, targets = hidden[keep], targets[keep]
    weight, bias = head.weight, head.bias
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        cast = cast or torch.Tensor.to
        rows, weight = rows.to(dtype), cast(weight, dtype)
        bias = cast(bias, dtype) if bias is not None else None
    with torch.autocast(device, enabled=False):
        return _function().apply(rows, weight, bias, targets, chunk_rows)


def _function():
    """The autograd function behind :func:`chunked_summed_loss` (defined on first use: torch is
    imported lazily). Summed cross-entropy of ``rows @ weight.T + bias`` against ``targets``; the
    gradients are computed chunk by chunk in the forward pass and kept (rows x hidden, never
    rows x vocabulary), so backward only scales them. Every chunk's logits (and, in bf16, their
    fp32 copy) are written into the same buffers (:func:`_chunk_buffers`)."""
    global _FUNCTION
    if _FUNCTION is None:
        import torch

        class LinearCrossEntropy(torch.autograd.Function):
            @staticmethod
            def forward(ctx, rows, weight, bias, targets, chunk_rows):
                total = torch.zeros((), dtype=torch.float32, device=rows.device)
                grad_rows = torch.empty_like(rows)
                grad_weight = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
                grad_bias = torch.zeros_like(bias, dtype=torch.float32) if bias is not None and bias.requires_grad else None
                logits_buffer, probs_buffer = _chunk_buffers(min(chunk_rows, rows.shape[0]), weight)
                copies = logits_buffer is not probs_buffer  # the head runs in bf16/fp16
                for start in range(0, rows.shape[0], chunk_rows):
                    part, tgt = rows[start:start + chunk_rows], targets[start:start + chunk_rows]
                    logits, probs = logits_buffer[:len(tgt)], probs_buffer[:len(tgt)]
                    if bias is None:
                        torch.mm(part, weight.t(), out=logits)
                    else:
                        torch.addmm(bias, part, weight.t(), out=logits)
                    probs, picked = _softmax_in_place(probs.copy_(logits) if copies else probs, tgt)
                    total += _summed_cross_entropy(picked, part, weight, bias, tgt)
                    probs[torch.arange(len(tgt), device=tgt.device), tgt] -= 1  # d(sum CE)/d(logits)
                    grad = logits.copy_(probs) if copies else probs
                    grad_rows[start:start + chunk_rows] = grad @ weight
                    if grad_weight is not None:
                        grad_weight += (grad.T @ part).float()
                    if grad_bias is not None:
                        grad_bias += probs.sum(0)
                ctx.save_for_backward(grad_rows, grad_weight, grad_bias)
                return total

            @staticmethod
            def backward(ctx, grad_output):
                grads = [None if g is None else g * grad_output.to(g.dtype) for g in ctx.saved_tensors]
                return *grads, None, None

        _FUNCTION = LinearCrossEntropy
    return _FUNCTION


_FUNCTION = None


#: (vocabulary, dtype, device) -> the last buffers :func:`_chunk_buffers` made, while
#: :func:`held_chunk_buffers` is active; None otherwise.
_HELD: dict[tuple, tuple[torch.Tensor, torch.Tensor]] | None = None


@contextlib.contextmanager
def held_chunk_buffers() -> Iterator[None]:
    """Keep the chunks' logits buffers from one loss call to the next for the duration (a
    training run): a fresh 50 MB buffer is memory the C library maps anew at every call, page by
    page (12,289 page faults, about 15 ms on the machine of the module's figures, at every micro-batch)."""
    global _HELD
    outer, _HELD = _HELD, {}
    try:
        yield
    finally:
        _HELD = outer


def _chunk_buffers(rows: int, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Buffers for one chunk's logits in ``weight``'s dtype and in fp32 (the same tensor when
    that is fp32), allocated once per loss call (once per run, while :func:`held_chunk_buffers`
    is active). A fresh chunk of logits (50 MB in fp32 for 256 SmolLM2 rows) is memory the C
    library maps anew, page by page, at every chunk: in a bf16 profile, the chunks' casts to and
    from fp32 took about 6% of the step (0.75 of 11.4 s)."""
    import torch

    key = (weight.shape[0], weight.dtype, weight.device)
    held = _HELD.get(key) if _HELD is not None else None
    if held is not None and held[1].shape[0] >= rows:
        return held[0][:rows], held[1][:rows]
    probs = torch.empty((rows, weight.shape[0]), dtype=torch.float32, device=weight.device)
    buffers = (probs, probs) if weight.dtype == torch.float32 else (
        torch.empty((rows, weight.shape[0]), dtype=weight.dtype, device=weight.device), probs)
    if _HELD is not None:
        _HELD.clear()
        _HELD[key] = buffers
    return buffers


#: a target's probability below this (fp32's smallest normal number is 1.2e-38) has lost digits or
#: underflowed to 0: its row's cross-entropy is computed again from its logits.
_TINY = 1e-30


def _softmax_in_place(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The softmax of fp32 ``logits`` over the vocabulary, written over them, and each row's
    probability of its target. torch's softmax kernel makes its passes over a row while the row
    is in the cache: 256 SmolLM2 rows (50 MB) took 4.2-4.7 ms where the same softmax as separate
    in-place operations (max, subtract, exp, sum, divide) took 14.5 ms on a 2-core AMD EPYC."""
    import torch

    probs = torch.softmax(logits, dim=-1, out=logits)
    return probs, probs.gather(1, targets[:, None]).squeeze(1)


def _summed_cross_entropy(picked: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
    """The summed cross-entropy ``-log p(target)`` of rows whose target probabilities are
    ``picked``. A probability under :data:`_TINY` (a loss above about 69) lost its digits in fp32:
    those rows' losses are ``logsumexp(logits) - logits[target]`` of their logits computed again
    (``rows @ weight.T + bias``; rare, and a handful of rows)."""
    import torch

    losses = picked.log().neg_()
    tiny = picked < _TINY
    if bool(tiny.any()):
        logits = torch.nn.functional.linear(rows[tiny], weight, bias).float()
        losses[tiny] = logits.logsumexp(-1) - logits.gather(1, targets[tiny][:, None]).squeeze(1)
    return losses.sum()
