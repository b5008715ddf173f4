"""Linear layers through oneDNN's prepacked weights while evaluating on a CPU.

A decode step multiplies a handful of rows (the batch) by every weight matrix. For such short
products PyTorch's default CPU kernel (MKL's sgemm) is slow: on an AVX2 EPYC, a 16-row SmolLM2-135M
decode step spent 79 of its 113 ms in matmuls running at a third of the matmul peak. oneDNN's
linear with the weight reordered once into its blocked layout (what inductor's CPU ``freezing``
does, and IPEX before it) ran the same products 1.35x faster, and an 805-item evaluation's greedy
tokens were the same. Its results for a row also do not depend on how many rows share the
product (MKL's do below 16 rows), which keeps the evaluator batch-invariant.

:func:`packed_linears` reorders the weight of every plain ``torch.nn.Linear`` held in float32 on
the CPU and routes the module's forward through the packed copy. A weight that no other module
shares is released meanwhile and rebuilt, bit for bit, from the packed copy on exit, so packing
costs no memory beyond one layer at a time. A weight that is shared (a head tied to the
embeddings) or whose module has hooks (an adapter's host, whose hook may read it) is kept beside
its packed copy; the hooks still run. An adapter's own layers are not packed. A call the packed kernel cannot serve (autograd to the
input, another dtype or device, a kept weight changed in place since packing) goes through
``F.linear``; a released weight takes no gradient (a clear error: evaluation never trains).

This is the one module that calls torch's private ``torch.ops.mkldnn`` linear operators; where
they are missing (a build without oneDNN) nothing is packed.
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["available", "packed_linears"]


@functools.cache
def available() -> bool:
    """Whether this torch build can run a linear layer on oneDNN's prepacked weights."""
    import torch

    try:
        weight = torch.ops.mkldnn._reorder_linear_weight(torch.ones(2, 2), None)
        out = torch.ops.mkldnn._linear_pointwise(torch.ones(1, 2), weight, None, "none", [], "")
    except (AttributeError, RuntimeError):
        return False
    return bool(torch.backends.mkldnn.is_available()) and torch.equal(out, torch.full((1, 2), 2.0))


class _PackedLinear:
    """One ``nn.Linear`` routed through its packed weight; :meth:`restore` undoes it."""

    def __init__(self, module: torch.nn.Linear, release: bool):
        import torch

        weight = module.weight
        self.module = module
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)
        self.version = weight._version
        self.released = release
        if release:
            weight.data = weight.data.new_empty(0)
        module.forward = self.forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        weight, bias = self.module.weight, self.module.bias
        grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        if grad and self.released and weight.requires_grad:
            raise RuntimeError(
                f"{type(self.module).__name__}'s weight is packed for evaluation (lladapt.evaluation."
                "packing.packed_linears): it takes no gradient there; train outside that context")
        stale = not self.released and weight._version != self.version
        if grad or stale or x.dtype != torch.float32 or x.device.type != "cpu":
            dense = self.packed.to_dense() if self.released else weight
            return torch.nn.functional.linear(x, dense, bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, bias, "none", [], "")

    def restore(self) -> None:
        del self.module.forward
        if self.released:
            self.module.weight.data = self.packed.to_dense()


def _packable(module: Any) -> bool:
    import torch

    return (
        type(module) is torch.nn.Linear
        and module.weight.dtype == torch.float32 and module.weight.device.type == "cpu"
        and (module.bias is None or module.bias.dtype == torch.float32)
        and "forward" not in vars(module)  # someone already replaced its forward
        and not hasattr(module, "_hf_hook")  # accelerate places its weights call by call
    )


@contextlib.contextmanager
def packed_linears(model: Any, enabled: bool = True) -> Iterator[int]:
    """While active, ``model``'s float32 CPU ``nn.Linear`` layers run on packed weights (see the
    module's docstring). Yields how many were packed: 0 when ``enabled`` is false, oneDNN is
    missing, or the model holds none."""
    packed: list[_PackedLinear] = []
    if not enabled or not available():
        yield 0
        return
    # a weight held by two modules (a head tied to the embeddings) stays where it is
    owners = Counter(p.untyped_storage().data_ptr()
                     for _, p in model.named_parameters(remove_duplicate=False) if p.numel())
    # an adapter's own layers are small and read their weights directly (fused branches)
    adapter = {id(t) for _, t in getattr(model, "named_adapter_tensors", tuple)()}
    try:
        for module in model.modules():
            if _packable(module) and id(module.weight) not in adapter:
                hooked = module._forward_hooks or module._forward_pre_hooks
                release = not hooked and owners[module.weight.untyped_storage().data_ptr()] == 1
                packed.append(_PackedLinear(module, release))
        yield len(packed)
    finally:
        for layer in reversed(packed):
            layer.restore()
