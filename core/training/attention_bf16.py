"""Causal attention for a CPU bf16 training run without AMX: bf16 matmuls, fp32 softmax.

Why (issue 20, SmolLM2-135M, 4 rows of 9 query and 3 key/value heads of 64, 2-core AMD EPYC with
AVX-512 BF16, no AMX): torch's CPU flash-attention kernel works on small blocks and is slower in
bf16 than in fp32 on short rows (:mod:`lladapt.training.attention`), and in fp32 its forward and
backward took about twice the time of their matmuls at fp32's peak. Here the scores and the
output are four batched bf16 matmuls forward and backward, one per key/value head for all the
query heads that share it (no key or value repeated), with the softmax and its gradient in fp32:
forward and backward of one layer took 6.0-8.1 ms against 8.9-13.3 ms for the fp32 chunked SDPA
at 165 tokens, and 11.9-14.5 against 16.8-18.5 ms at 256 (medians of runs of 50 calls, three
runs and two runs apart, a noisy stretch).

Precision: the scores leave their matmul rounded to bf16 and the probabilities enter theirs in
bf16, as in eager attention under autocast; the output differed from fp32 attention by up to
0.018 (for unit-normal inputs), its gradients by up to 0.7% of their largest element.

Backward keeps the probabilities in bf16 (2 bytes a score; flash attention recomputes them from
its log-sum-exp instead): 4 x 3 x 768 x 256 scores, 4.7 MB a layer at 256 tokens.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["causal_attention_bf16"]


class _Attention(torch.autograd.Function):
    """``softmax(q k^T * scale, masked) v`` for ``q`` (batch, heads, queries, dim) and ``k``, ``v``
    (batch, key/value heads, keys, dim); the output is (batch, queries, heads, dim) in bf16."""

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
                scale: float) -> torch.Tensor:
        batch, heads, rows, dim = query.shape
        groups, keys = key.shape[1], key.shape[2]
        # the query heads that share a key/value head, one after the other as rows
        q = query.to(torch.bfloat16).reshape(batch, groups, heads // groups * rows, dim)
        k, v = key.to(torch.bfloat16), value.to(torch.bfloat16)
        scores = torch.matmul(q, k.transpose(-1, -2)).float().mul_(scale)
        hidden = ~mask.view(-1, 1, 1, rows, keys)
        scores.view(batch, groups, heads // groups, rows, keys).masked_fill_(hidden, torch.finfo(torch.float32).min)
        probs = torch.softmax(scores, -1, out=scores).to(torch.bfloat16)
        out = torch.matmul(probs, v)
        ctx.save_for_backward(q, k, v, out, probs)
        ctx.scale, ctx.dtypes = scale, (query.dtype, key.dtype, value.dtype)
        return out.view(batch, groups, heads // groups, rows, dim).flatten(1, 2).transpose(1, 2)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        q, k, v, out, probs = ctx.saved_tensors
        batch, rows, heads, dim = grad.shape
        g = grad.transpose(1, 2).to(torch.bfloat16).reshape(out.shape)
        grad_v = torch.matmul(probs.transpose(-1, -2), g)
        # d scores = p * (d p - rowsum(d out * out)) * scale, in fp32
        delta = torch.linalg.vecdot(g.float(), out.float()).unsqueeze_(-1)
        grad_scores = torch.matmul(g, v.transpose(-1, -2)).float().sub_(delta).mul_(probs).mul_(ctx.scale)
        grad_scores = grad_scores.to(torch.bfloat16)
        grad_q = torch.matmul(grad_scores, k).view(batch, heads, rows, dim)
        grad_k = torch.matmul(grad_scores.transpose(-1, -2), q)
        query_dtype, key_dtype, value_dtype = ctx.dtypes
        return grad_q.to(query_dtype), grad_k.to(key_dtype), grad_v.to(value_dtype), None, None


def causal_attention_bf16(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
                          scale: float) -> torch.Tensor:
    """Attention of ``query`` to ``key``/``value`` where the boolean ``mask`` (batch or 1, 1,
    queries, keys) allows, in bf16 matmuls and an fp32 softmax; (batch, queries, heads, dim), bf16.
    A query that may see no key gets the mean of all values (its output is padding's)."""
    with torch.autocast(query.device.type, enabled=False):
        return _Attention.apply(query, key, value, mask, scale)
