"""Attention in fp32 while the rest of a CPU step runs in bf16 autocast.

Without AMX, torch's CPU flash-attention kernel is slower in bf16 than in fp32 on short rows.
Measured on a 2-core AMD EPYC with AVX-512 BF16 and no AMX, one SmolLM2 layer's attention (4 rows,
9 query and 3 key/value heads of 64), forward and backward: bf16 took 2.7x fp32's time at 48
tokens, 1.7x at 96-128, 1.5x at 160, 1.15x at 192, and the same (0.9-1.07x) from 224 to 768
tokens. With AMX, torch's bf16 kernel takes its AMX path instead; that was not measured, so with
AMX the attention is left as it is.

Under autocast, LLaMA's queries and keys leave the rotary embedding in fp32 already (the embedding
multiplies bf16 projections by fp32 cos/sin), and autocast casts them down to bf16 for SDPA and
their gradients back up. Running the attention in fp32 drops those casts and computes it more
precisely; the output goes on in fp32 into ``o_proj``, which autocast casts as it does any input.

It goes through transformers' public attention registry (``AttentionInterface`` and
``AttentionMaskInterface``, its "attention interface" documentation): the model's
``attn_implementation`` is set to :data:`IMPLEMENTATION` (SDPA's own mask and function, in fp32)
for the run and set back afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: the name this module registers with transformers.
IMPLEMENTATION = "lladapt_sdpa_fp32"


def sdpa_in_fp32(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """transformers' SDPA attention with autocast off and fp32 queries, keys and values."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    with torch.autocast(query.device.type, enabled=False):
        return sdpa_attention_forward(module, query.float(), key.float(), value.float(),
                                      attention_mask, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(IMPLEMENTATION, sdpa_in_fp32)
    AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


def _outer_sdpa_model(model: torch.nn.Module) -> Any:
    """The outermost transformers model in ``model`` whose attention is SDPA (None: none is).
    Setting the implementation on it sets it on the configs it shares with its submodels."""
    from transformers import PreTrainedModel

    return next((m for m in model.modules()
                 if isinstance(m, PreTrainedModel) and m.config._attn_implementation == "sdpa"), None)


@contextlib.contextmanager
def fp32_attention(model: torch.nn.Module, active: bool) -> Iterator[bool]:
    """``model``'s SDPA attention in fp32 for the duration, where ``active``; yields whether it
    is (a model on another attention implementation is left alone)."""
    outer = _outer_sdpa_model(model) if active else None
    if outer is None:
        yield False
        return
    _register()
    outer.set_attn_implementation(IMPLEMENTATION)
    try:
        yield True
    finally:
        outer.set_attn_implementation("sdpa")
