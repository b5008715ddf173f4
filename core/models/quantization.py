"""bitsandbytes set-up for ``model.quantization``: the ``BitsAndBytesConfig`` handed to
``from_pretrained``, the fix-up of 4-bit layers bitsandbytes' CPU path cannot run, and the
parameter count of a packed 4-bit tensor.

Everything here that depends on bitsandbytes' internals (``support_avx512bf16_for_cpu``,
``quant_state.blocksize``, ``Params4bit.quant_storage``) says why beside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lladapt.common.errors import ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from lladapt.config import QuantizationConfig

__all__ = ["bnb_config", "fix_bnb_cpu_packing", "torch_dtype", "unpacked_numel"]


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a config's dtype name (``"bfloat16"``)."""
    import torch

    return getattr(torch, name)


def _auto_compute_dtype() -> torch.dtype:
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def bnb_config(quant: QuantizationConfig, dtype: str) -> Any:
    """A transformers ``BitsAndBytesConfig`` for ``model.quantization``; the 4-bit compute dtype
    is ``quant.compute_dtype``, else ``model.dtype``, else the best the device supports."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(
            f"model.quantization: {quant.bits}-bit loading needs bitsandbytes "
            "(pip install 'lladapt[quant]')"
        ) from exc
    from transformers import BitsAndBytesConfig

    if quant.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    if quant.compute_dtype:
        compute = torch_dtype(quant.compute_dtype)
    elif dtype != "auto":
        compute = torch_dtype(dtype)
    else:
        compute = _auto_compute_dtype()
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.quant_type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=compute,
    )


def fix_bnb_cpu_packing(model: torch.nn.Module) -> None:
    """bitsandbytes' AVX512-bf16 CPU inference path repacks 4-bit weights and asserts that the
    out features are a multiple of 32 and the in features of the block size; small models (e.g.
    stories260k's FFN of 172) crash there. Send such layers down the generic path instead."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:  # pragma: no cover - quantized loading already needed it
        return
    for module in model.modules():
        if not isinstance(module, Linear4bit) or not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        quant_state = getattr(module.weight, "quant_state", None)
        blocksize = getattr(quant_state, "blocksize", 64)
        if module.out_features % 32 or module.in_features % blocksize:
            module.support_avx512bf16_for_cpu = False


def unpacked_numel(param: torch.Tensor) -> int:
    """Parameters a tensor stands for. bitsandbytes packs 4-bit weights into a ``Params4bit`` of
    ``quant_storage`` dtype (uint8 by default: two weights a byte), so its ``numel()`` is a
    fraction of the layer's parameters; count them unpacked, as transformers'
    ``num_parameters`` does. (Relies on bitsandbytes' class name and ``quant_storage``.)"""
    n = param.numel()
    if type(param).__name__ == "Params4bit":
        import torch

        storage = getattr(param, "quant_storage", torch.uint8)
        n *= 2 * torch.empty((), dtype=storage).element_size()
    return n
