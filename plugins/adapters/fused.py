"""The LoRA and bottleneck branches as one autograd function each: dropout, the two projections,
(the activation) and the scaling, with a cheaper dropout on the CPU.

Why (issue 20's profile of a bf16 LoRA step on SmolLM2-135M, 2 CPU cores): ``aten::bernoulli_``
(dropout's mask, drawn one element at a time by a serial kernel) took 18% of the step, and the
elementwise ``mul`` and casts of the branches more than the matmuls. Here:

* on the CPU the dropout draws the positions of the dropped elements, not a mask: the gaps
  between consecutive dropped elements of a Bernoulli(``p``) sequence are geometric,
  ``floor(log(1 - u) / log(1 - p))`` for a uniform ``u``, so about ``p * n`` float32 draws, a
  ``cumsum`` and an ``index_fill_`` of those positions replace ``n`` draws and two passes over
  the input (the mask before this, 16-bit slices of 64-bit draws, still took about 8% of a bf16
  step). Each element is dropped with probability ``p`` (to within float32's rounding of the
  logarithm, about 1e-7 relative) and kept values are scaled by ``1 / (1 - p)``, as
  ``nn.Dropout`` does. The positions saved for backward take 0.4 bytes per element where a
  boolean mask took 1. On a GPU the mask is ``bernoulli_`` (already fast there);
* the input is cast to the compute dtype (autocast's, else the branch's) once, masked, and the
  scalings (``1 / (1 - p)`` and the adapter's) are applied to the rank-``r`` (or bottleneck-wide)
  hidden tensor instead of the full-width output;
* backward saves the masked input in the compute dtype, the dropped positions (or mask) and the
  small hidden tensor, the tensors eager autograd keeps too, less the full-width scaled output.

Both use the default random generator, so a resumed run (which restores it) and gradient
checkpointing (which replays it) draw the same masks. ``LLADAPT_FUSED_ADAPTERS=0`` switches back
to the eager modules (benchmarks compare the two; tests check they agree).
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn

__all__ = ["as_mask", "bottleneck_delta", "drop_mask", "enabled", "lora_delta"]


def enabled(dropout: nn.Module) -> bool:
    """Whether the fused path applies: switched on (the default), not under ``torch.compile``
    (inductor fuses the eager modules itself, and ``random_`` would break its graph), and the
    branch's dropout is the stock ``nn.Dropout`` or none (a replaced one keeps the eager path)."""
    if torch.compiler.is_compiling():
        return False
    return os.environ.get("LLADAPT_FUSED_ADAPTERS", "1") != "0" and type(dropout) in (nn.Dropout, nn.Identity)


def drop_probability(dropout: nn.Module) -> float:
    """The dropout probability in force: 0 in eval mode or without dropout."""
    return float(dropout.p) if isinstance(dropout, nn.Dropout) and dropout.training else 0.0


#: draws beyond the expected count, in standard deviations: they fall short of ``n`` (and more are
#: drawn) about once in 10^9 calls.
_MARGIN = 6.0


def drop_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """The elements to drop: on the CPU their flat positions (int64, ascending; see the module's
    docstring), elsewhere a boolean mask of ``shape`` from ``bernoulli_``."""
    if device.type != "cpu":
        return torch.empty(shape, dtype=torch.bool, device=device).bernoulli_(p)
    return _drop_positions(shape.numel(), p)


def _drop_positions(n: int, p: float, start: int = 0) -> torch.Tensor:
    """The positions in ``[start, n)`` a Bernoulli(``p``) sequence drops, from geometric gaps."""
    if p >= 1.0:
        return torch.arange(start, n)
    expected = (n - start) * p
    draws = int(expected + _MARGIN * math.sqrt(expected) + 16)
    u = torch.empty(draws, dtype=torch.float32).uniform_()
    kept_before = torch.log1p(u.neg_()).div_(math.log1p(-p)).floor_().to(torch.int64)
    positions = kept_before.add_(1).cumsum_(0).add_(start - 1)
    if positions[-1] < n:  # the draws ended before n: draw on from the last position
        return torch.cat([positions, _drop_positions(n, p, int(positions[-1]) + 1)])
    return positions[:int(torch.searchsorted(positions, n))]


def as_mask(drop: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``drop`` (either form :func:`drop_mask` returns) as a boolean mask of ``shape``."""
    if drop.dtype == torch.bool:
        return drop
    return torch.zeros(shape.numel(), dtype=torch.bool).index_fill_(0, drop, True).view(shape)


def _zero_dropped(t: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """``t`` (contiguous, not a leaf's storage) with the ``drop`` elements zeroed in place."""
    if drop.dtype == torch.bool:
        return t.masked_fill_(drop, 0)
    t.view(-1).index_fill_(0, drop, 0)
    return t


def _dropped(x: torch.Tensor, drop: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in ``dtype`` with the ``drop`` elements zeroed, in one new tensor."""
    xc = x.to(dtype, memory_format=torch.contiguous_format)
    if drop is None:
        return xc
    return _zero_dropped(x.clone(memory_format=torch.contiguous_format) if xc is x else xc, drop)


def _compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


class _LowRank(torch.autograd.Function):
    """``(mask(x) @ A^T * factor) @ B^T`` with the mask's zeros and ``factor`` folded in."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, drop: torch.Tensor | None,
                factor: float, dtype: torch.dtype) -> torch.Tensor:
        xc = _dropped(x, drop, dtype)
        ac, bc = a.to(dtype), b.to(dtype)
        h = torch.matmul(xc, ac.t()).mul_(factor)
        ctx.save_for_backward(xc, h, ac, bc, drop)
        ctx.factor, ctx.x_dtype = factor, x.dtype
        return torch.matmul(h, bc.t())

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        xc, h, ac, bc, drop = ctx.saved_tensors
        g = grad.to(bc.dtype)
        grad_b = g.reshape(-1, g.shape[-1]).t().matmul(h.reshape(-1, h.shape[-1]))
        gh = torch.matmul(g, bc).mul_(ctx.factor)
        grad_a = gh.reshape(-1, gh.shape[-1]).t().matmul(xc.reshape(-1, xc.shape[-1]))
        if not ctx.needs_input_grad[0]:  # the first layer's input: frozen embeddings
            return None, grad_a, grad_b, None, None, None
        grad_x = torch.matmul(gh, ac)
        if drop is not None:
            grad_x = _zero_dropped(grad_x, drop)
        return grad_x.to(ctx.x_dtype), grad_a, grad_b, None, None, None


def _masked(x: torch.Tensor, dropout: nn.Module) -> tuple[torch.Tensor | None, float]:
    p = drop_probability(dropout)
    if p == 0.0:
        return None, 1.0
    return drop_mask(x.shape, p, x.device), 1.0 / (1.0 - p) if p < 1.0 else 0.0


def lora_delta(x: torch.Tensor, a: nn.Linear, b: nn.Linear, dropout: nn.Module, scaling: float) -> torch.Tensor:
    """``scaling * B(A(dropout(x)))`` in one autograd function (gradients to x, A and B in the
    parameters' dtype)."""
    drop, inverse_keep = _masked(x, dropout)
    dtype = _compute_dtype(x, a.weight)
    return _LowRank.apply(x, a.weight, b.weight, drop, scaling * inverse_keep, dtype)


def bottleneck_delta(x: torch.Tensor, down: nn.Linear, up: nn.Linear, dropout: nn.Module,
                     act: Any, scale: torch.Tensor | float) -> torch.Tensor:
    """``scale * up(act(down(dropout(x))))`` with the cheaper dropout, the input cast once and the
    ``1 / (1 - p)`` folded into the bottleneck-wide hidden tensor (autograd differentiates the
    activation, whatever it is)."""
    drop, inverse_keep = _masked(x, dropout)
    dtype = _compute_dtype(x, down.weight)
    h = torch.matmul(_dropped(x, drop, dtype), down.weight.to(dtype).t())
    if inverse_keep != 1.0:
        h = h * inverse_keep
    if down.bias is not None:
        h = h + down.bias.to(dtype)
    out = torch.matmul(act(h), up.weight.to(dtype).t())
    if up.bias is not None:
        out = out + up.bias.to(dtype)
    return out * scale
