"""The attention a CPU training run uses: SDPA with the queries of a causal call in chunks, and
bf16 matmuls with an fp32 softmax while the rest of a bf16 step runs in autocast (without AMX).

**Query chunks.** torch's CPU flash-attention kernel splits the keys into blocks of 512 and skips
a block only when it lies wholly above the diagonal, so below 512 tokens every query is scored
against every key, masked or not: causal attention costs the full square. Each query row's
attention is independent of the others', so the queries are cut into chunks of
:data:`CHUNK` rows and each chunk is scored against the keys up to its last row only: at 256
tokens, 10/16 of the square. Grouped keys and values go in as they are (``enable_gqa``) instead of
repeated to every query head. Measured on a 2-core AMD EPYC (AVX-512 BF16, no AMX), one SmolLM2
layer's attention (4 rows, 9 query and 3 key/value heads of 64), forward and backward in fp32
against transformers' SDPA call: 1.3-1.7x as fast from 113 to 256 tokens; the outputs equal, the
gradients within 1e-6. A call that is not plainly causal keeps transformers' own SDPA call: a mask
that lets any query see a later key, attention dropout, a position bias or softcap, fewer than
two chunks of queries, or tracing under ``torch.compile``.

**Under bf16.** Without AMX, torch's CPU flash-attention kernel is slower in bf16 than in fp32 on
short rows: on the same machine bf16 took 2.7x fp32's time at 48 tokens, 1.7x at 96-128, 1.5x at
160, 1.15x at 192 and the same (0.9-1.07x) from 224 to 768 tokens. A bf16 run's plainly causal
calls (of any length) go to :func:`~lladapt.training.attention_bf16.causal_attention_bf16`
instead: its batched bf16 matmuls took about two thirds of the fp32 chunked kernel's time (that
module's docstring); its output goes on in bf16 into ``o_proj``. Any other call runs the chunked
SDPA in fp32 (:func:`sdpa_chunked_in_fp32`): LLaMA's queries and keys leave the rotary embedding
in fp32 already, so that drops autocast's casts. With AMX, torch's bf16 kernel takes its AMX path
instead; that was not measured, so a bf16 run with AMX leaves the attention as it is.

It goes through transformers' public attention registry (``AttentionInterface`` and
``AttentionMaskInterface``, its "attention interface" documentation): the model's
``attn_implementation`` is set to :data:`CHUNKED` or :data:`BF16` (SDPA's own mask) for the run
and set back to ``sdpa`` afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: the names this module registers with transformers.
CHUNKED, BF16 = "lladapt_sdpa", "lladapt_attention_bf16"
#: query rows per chunk (64 measured faster than 128 on the machine above, from 113 to 256 tokens).
CHUNK = 64


def _causal_mask(attention_mask: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor,
                 kwargs: dict[str, Any], min_rows: int = 2 * CHUNK) -> torch.Tensor | None:
    """The boolean mask of a plainly causal call of at least ``min_rows`` queries, or None where
    the call is not one: the mask lets no query see a key after its own position (keys before the
    queries, a cache or a prefix, are the offset)."""
    import torch

    q_len, offset = query.shape[2], key.shape[2] - query.shape[2]
    if (q_len < min_rows or offset < 0 or torch.compiler.is_compiling() or kwargs.get("dropout")
            or kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None
            or kwargs.get("is_causal") is False or query.shape[1] % key.shape[1]):
        return None
    if attention_mask is None:
        return torch.ones(q_len, key.shape[2], dtype=torch.bool, device=query.device).tril(offset)
    if attention_mask.dtype != torch.bool or attention_mask.dim() != 4 or attention_mask.triu(offset + 1).any():
        return None
    return attention_mask


def sdpa_chunked(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """transformers' SDPA attention, with a causal call's queries in chunks of :data:`CHUNK`."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    mask = _causal_mask(attention_mask, query, key, kwargs)
    if mask is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    offset, grouped = key.shape[2] - query.shape[2], query.shape[1] != key.shape[1]
    outputs = []
    for start in range(0, query.shape[2], CHUNK):
        end = min(start + CHUNK, query.shape[2])
        seen = offset + end  # the keys this chunk's last query sees
        out = torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, :seen], value[:, :, :seen], attn_mask=mask[..., start:end, :seen],
            scale=kwargs.get("scaling"), enable_gqa=grouped)
        outputs.append(out.transpose(1, 2))
    return torch.cat(outputs, dim=1), None  # (batch, queries, heads, head_dim), as transformers'


def sdpa_chunked_in_fp32(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """:func:`sdpa_chunked` with autocast off and fp32 queries, keys and values."""
    import torch

    with torch.autocast(query.device.type, enabled=False):
        return sdpa_chunked(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)


def attention_in_bf16(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """A plainly causal call under bf16 autocast in bf16 matmuls with an fp32 softmax
    (:func:`~lladapt.training.attention_bf16.causal_attention_bf16`); any other call under
    autocast as :func:`sdpa_chunked_in_fp32`, and a call outside autocast (a forward of the fp32
    model in a checkpoint's callback) as :func:`sdpa_chunked`."""
    import torch

    from lladapt.training.attention_bf16 import causal_attention_bf16

    device = query.device.type
    if not torch.is_autocast_enabled(device):
        return sdpa_chunked(module, query, key, value, attention_mask, **kwargs)
    mask = _causal_mask(attention_mask, query, key, kwargs, min_rows=1)
    if mask is None or torch.get_autocast_dtype(device) is not torch.bfloat16:
        return sdpa_chunked_in_fp32(module, query, key, value, attention_mask, **kwargs)
    scale = kwargs.get("scaling") or query.shape[-1] ** -0.5
    return causal_attention_bf16(query, key, value, mask, scale), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    for name, function in ((CHUNKED, sdpa_chunked), (BF16, attention_in_bf16)):
        AttentionInterface.register(name, function)
        AttentionMaskInterface.register(name, sdpa_mask)


def _outer_sdpa_model(model: torch.nn.Module) -> Any:
    """The outermost transformers model in ``model`` whose attention is SDPA (None: none is).
    Setting the implementation on it sets it on the configs it shares with its submodels."""
    from transformers import PreTrainedModel

    return next((m for m in model.modules()
                 if isinstance(m, PreTrainedModel) and m.config._attn_implementation == "sdpa"), None)


@contextlib.contextmanager
def training_attention(model: torch.nn.Module, active: bool, bf16: bool) -> Iterator[str | None]:
    """``model``'s SDPA attention chunked (:data:`CHUNKED`; in bf16 matmuls where ``bf16``:
    :data:`BF16`) for the duration, where ``active``; yields the implementation in force (None: a
    model on another attention implementation is left alone)."""
    outer = _outer_sdpa_model(model) if active else None
    if outer is None:
        yield None
        return
    _register()
    implementation = BF16 if bf16 else CHUNKED
    outer.set_attn_implementation(implementation)
    try:
        yield implementation
    finally:
        outer.set_attn_implementation("sdpa")
