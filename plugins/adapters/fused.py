"""The LoRA and bottleneck branches as one autograd function each: dropout, the two projections,
(the activation) and the scaling, with a cheaper dropout mask on the CPU.

Why (issue 20's profile of a bf16 LoRA step on SmolLM2-135M, 2 CPU cores): ``aten::bernoulli_``
(dropout's mask, drawn one element at a time by a serial kernel) took 18% of the step, and the
elementwise ``mul`` and casts of the branches more than the matmuls. Here:

* the dropout mask on the CPU is drawn 16 bits at a time: ``random_`` over the full int64 range
  gives 64 random bits per draw, a quarter of a draw per element, then one vectorised comparison
  of each 16-bit slice (5x faster than ``bernoulli_`` on the machine of issue 20's profile; on an
  AVX-512 EPYC, the mask of a 1,024 x 1,536 input took a third less time than from 32-bit draws,
  that of a 1,024 x 576 one about the same). The drop
  probability is therefore ``round(p * 65536) / 65536`` (0.0500031 for 0.05) and kept values are
  scaled by ``1 / (1 - that)``. On a GPU the mask is ``bernoulli_`` (already fast there), exact;
* the input is cast to the compute dtype (autocast's, else the branch's) once, masked, and the
  scalings (``1 / (1 - p)`` and the adapter's) are applied to the rank-``r`` (or bottleneck-wide)
  hidden tensor instead of the full-width output;
* backward saves the masked input in the compute dtype, the boolean mask and the small hidden
  tensor, the tensors eager autograd keeps too, less the full-width scaled output.

Both use the default random generator, so a resumed run (which restores it) and gradient
checkpointing (which replays it) draw the same masks. ``LLADAPT_FUSED_ADAPTERS=0`` switches back
to the eager modules (benchmarks compare the two; tests check they agree).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

__all__ = ["bottleneck_delta", "drop_mask", "enabled", "lora_delta"]


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


def drop_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """A boolean mask of the dropped elements and the probability ``q`` it drops with (see the
    module's docstring): on the CPU from 16-bit slices of 64-bit draws, elsewhere ``bernoulli_``."""
    if device.type != "cpu":
        return torch.empty(shape, dtype=torch.bool, device=device).bernoulli_(p), p
    n = shape.numel()
    threshold = round(p * 65536)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # all 64 bits random
    slices = words.view(torch.int16)[:n].view(shape)  # each uniform over [-32768, 32768)
    return slices < threshold - 32768, threshold / 65536


def _dropped(x: torch.Tensor, drop: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in ``dtype`` with the ``drop`` elements zeroed, in one new tensor."""
    xc = x.to(dtype)
    if drop is None:
        return xc
    return torch.where(drop, 0, x) if xc is x else xc.masked_fill_(drop, 0)


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
        grad_x = torch.matmul(gh, ac)
        if drop is not None:
            grad_x = grad_x.masked_fill_(drop, 0)
        return grad_x.to(ctx.x_dtype), grad_a, grad_b, None, None, None


def _masked(x: torch.Tensor, dropout: nn.Module) -> tuple[torch.Tensor | None, float]:
    p = drop_probability(dropout)
    if p == 0.0:
        return None, 1.0
    drop, q = drop_mask(x.shape, p, x.device)
    return drop, 1.0 / (1.0 - q)


def lora_delta(x: torch.Tensor, a: nn.Linear, b: nn.Linear, dropout: nn.Module, scaling: float) -> torch.Tensor:
    """``scaling * B(A(dropout(x)))`` in one autograd function (gradients to x, A and B in the
    parameters' dtype)."""
    drop, inverse_keep = _masked(x, dropout)
    dtype = _compute_dtype(x, a.weight)
    return _LowRank.apply(x, a.weight, b.weight, drop, scaling * inverse_keep, dtype)


def bottleneck_delta(x: torch.Tensor, down: nn.Linear, up: nn.Linear, dropout: nn.Module,
                     act: Any, scale: torch.Tensor | float) -> torch.Tensor:
    """``scale * up(act(down(dropout(x))))`` with the cheaper mask, the input cast once and the
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
