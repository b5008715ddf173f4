"""The rotary position embedding of a CPU training run in one pass each way.

transformers' ``apply_rotary_pos_emb`` (LLaMA's, and the models that copy it) computes
``q * cos + rotate_half(q) * sin`` as five operations, ``rotate_half`` a slice, a negation and a
concatenation, and autograd differentiates each of them: about ten passes over the queries and
keys each way. Here one autograd function writes each half of the output with one multiply and one
``addcmul`` (``x1 * cos - x2 * sin`` and ``x2 * cos + x1 * sin``), and backward the same way with
the rotation transposed, in the gradient's dtype with one rounding to the input's at the end.
Measured on a 2-core AMD EPYC (AVX-512 BF16, no AMX), SmolLM2's queries and keys at 4 x 165
tokens (bf16 projections, fp32 cos/sin, as under autocast), forward and backward: 0.9-1.2 ms
against 2.1 ms; the outputs equal to within fp32 rounding (4.8e-7), the bf16 input gradients
within one bf16 unit (the original rounds each of its two parts to bf16 and adds them in bf16).

It replaces the function, for the run, in the modeling modules of the model's layers that define
one (a module global, which the attention looks up at each call: transformers' internals, so only
where the replacement is checked to compute what the original does, on a small random input called
as ``(q, k, cos, sin, unsqueeze_dim=...)``; GPT-J's interleaved layout or another signature keeps
its own). A call made otherwise, under ``torch.compile``, or with ``cos`` not covering the whole
head (a partial rotary), goes to the original."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: the name of the function in a modeling module.
NAME = "apply_rotary_pos_emb"


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor,
            transposed: bool = False) -> torch.Tensor:
    """``out = x * cos + rotate_half(x) * sin`` (``[x1 c1 - x2 s1, x2 c2 + x1 s2]`` by halves), or
    with ``transposed`` the gradient's transpose of it (``[x1 c1 + x2 s2, x2 c2 - x1 s1]``), one
    half of ``out`` at a time."""
    import torch

    half = x.shape[-1] // 2
    x1, x2, o1, o2 = x[..., :half], x[..., half:], out[..., :half], out[..., half:]
    c1, c2, s1, s2 = cos[..., :half], cos[..., half:], sin[..., :half], sin[..., half:]
    sign = -1.0 if transposed else 1.0
    torch.mul(x1, c1, out=o1).addcmul_(x2, s2 if transposed else s1, value=-sign)
    torch.mul(x2, c2, out=o2).addcmul_(x1, s1 if transposed else s2, value=sign)
    return out


def _function() -> type:
    global _FUNCTION
    if _FUNCTION is None:
        import torch

        class Rotary(torch.autograd.Function):
            """The rotary embedding of ``q`` and ``k`` (``cos``/``sin`` already unsqueezed)."""

            @staticmethod
            def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                        sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                ctx.save_for_backward(cos, sin)
                ctx.dtypes = q.dtype, k.dtype
                return tuple(_rotate(x, cos, sin, torch.empty(
                    x.shape, dtype=torch.promote_types(x.dtype, cos.dtype), device=x.device)) for x in (q, k))

            @staticmethod
            def backward(ctx: Any, grad_q: torch.Tensor, grad_k: torch.Tensor) -> tuple[Any, ...]:
                cos, sin = ctx.saved_tensors
                grads = [None if g is None else _rotate(g, cos, sin, torch.empty_like(
                    g, memory_format=torch.contiguous_format), transposed=True).to(dtype)
                    for g, dtype in zip((grad_q, grad_k), ctx.dtypes, strict=True)]
                return grads[0], grads[1], None, None

        _FUNCTION = Rotary
    return _FUNCTION


_FUNCTION: type | None = None


def _in_one_pass(original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` (transformers' function, or the module ``kernels`` wraps it in) computed by
    :func:`_function` where it is called as ``(q, k, cos, sin[, unsqueeze_dim])`` on whole heads
    of an even width; any other call goes to ``original``."""
    import torch

    def apply_rotary_pos_emb(*args: Any, **kwargs: Any) -> Any:
        unsqueeze_dim = args[4] if len(args) == 5 else kwargs.get("unsqueeze_dim", 1)
        if (len(args) not in (4, 5) or set(kwargs) - {"unsqueeze_dim"} or len(args) + len(kwargs) > 5
                or type(unsqueeze_dim) is not int or torch.compiler.is_compiling()):
            return original(*args, **kwargs)
        q, k, cos, sin = args[:4]
        if cos.shape[-1] != q.shape[-1] or k.shape[-1] != q.shape[-1] or q.shape[-1] % 2:
            return original(*args, **kwargs)
        return _function().apply(q, k, cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim))

    apply_rotary_pos_emb.original = original  # type: ignore[attr-defined]
    return apply_rotary_pos_emb


def _computes_the_same(original: Callable[..., Any], replacement: Callable[..., Any]) -> bool:
    """Whether ``replacement`` gives ``original``'s outputs and gradients on a small random input
    (2 rows, 3 query and 1 key heads of 8, 5 positions; fp32; random cos and sin, whose halves
    differ), heads before positions (``unsqueeze_dim=1``) and after (``2``)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    cos, sin = (torch.randn(2, 5, 8, generator=generator) for _ in range(2))  # halves of their own
    try:
        for dim in (1, 2):
            shapes = [(2, heads, 5, 8) if dim == 1 else (2, 5, heads, 8) for heads in (3, 1)]
            q, k = (torch.randn(*shape, generator=generator) for shape in shapes)
            outputs = []
            for function in (original, replacement):
                qi, ki = q.clone().requires_grad_(), k.clone().requires_grad_()
                q_out, k_out = function(qi, ki, cos, sin, unsqueeze_dim=dim)
                (q_out * torch.arange(q_out.numel()).view_as(q_out)).sum().add(k_out.sum() * 3).backward()
                outputs.append((q_out, k_out, qi.grad, ki.grad))
            if not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(*outputs, strict=True)):
                return False
        return True
    except Exception:  # noqa: BLE001 - another layout or signature: keep the original
        return False


def _modeling_modules(model: torch.nn.Module) -> list[Any]:
    """The modules (Python's) defining the classes of ``model``'s submodules that have a
    :data:`NAME` function."""
    names = {type(m).__module__ for m in model.modules()}
    return [sys.modules[n] for n in sorted(names) if n in sys.modules and callable(getattr(sys.modules[n], NAME, None))]


@contextlib.contextmanager
def rotary_in_one_pass(model: torch.nn.Module, active: bool) -> Iterator[int]:
    """``model``'s rotary embedding computed by :func:`_function` for the duration, where
    ``active`` and where it computes the same (see the module docstring); yields how many
    modeling modules it replaced the function in."""
    replaced = []
    for module in _modeling_modules(model) if active else []:
        original = getattr(module, NAME)
        if getattr(original, "original", None) is None:  # not already replaced by an outer run
            replacement = _in_one_pass(original)
            if _computes_the_same(original, replacement):
                setattr(module, NAME, replacement)
                replaced.append((module, original))
    try:
        yield len(replaced)
    finally:
        for module, original in replaced:
            setattr(module, NAME, original)
