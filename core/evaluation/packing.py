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

Layers that one module calls on the same input (q/k/v, gate/up: :data:`SIBLINGS`) are packed as
one stacked weight and run as one product, each taking its slice: fewer, larger products, the same
bits (each output is the same dot product). Measured on SmolLM2-135M's 30 layers at 16 rows, the
q/k/v and gate/up products of a decode step took 28-30 ms stacked against 30-36 ms apart.

This is the one module that calls torch's private ``torch.ops.mkldnn`` linear operators; where
they are missing (a build without oneDNN) nothing is packed.
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from lladapt.common.shared_input import ATTENTION_INPUT, KeptOutputs

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["SIBLINGS", "available", "packed_linears"]

#: names of sibling layers that a transformers attention or MLP calls on one input, packed as one
#: product: LLaMA's, OPT's and GPT-J's q/k/v, LLaMA's gate/up.
SIBLINGS: tuple[tuple[str, ...], ...] = (ATTENTION_INPUT, ("gate_proj", "up_proj"))


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


class _Packed:
    """Sibling ``nn.Linear`` layers that read the same input (a layer alone, or an attention's
    q/k/v), routed through one packed weight: their weights stacked, one product for all, each
    layer's slice of it. :meth:`restore` undoes it.

    The first layer of a group called with an input computes every layer's output and keeps the
    others' until their layer is called with that same tensor (transformers' attention and MLP
    call q/k/v and gate/up on one ``hidden_states``); a layer called with another input gets the
    product computed anew (:class:`~lladapt.common.shared_input.KeptOutputs`). Only released
    weights are grouped (a kept one may change in place)."""

    def __init__(self, modules: list[torch.nn.Linear], release: bool):
        import torch

        weights = [m.weight.detach() for m in modules]
        self.modules = modules
        self.sizes = [m.out_features for m in modules]
        self.packed = torch.ops.mkldnn._reorder_linear_weight(
            weights[0] if len(weights) == 1 else torch.cat(weights), None)
        biases = [m.bias for m in modules]
        self.bias = biases[0] if len(modules) == 1 else (
            None if biases[0] is None else torch.cat([b.detach() for b in biases]))
        self.version = modules[0].weight._version
        self.released = release
        self.kept = KeptOutputs()
        for index, module in enumerate(modules):
            if release:
                module.weight.data = module.weight.data.new_empty(0)
            module.forward = functools.partial(self.forward, index)

    def forward(self, index: int, x: torch.Tensor) -> torch.Tensor:
        import torch

        module = self.modules[index]
        weight = module.weight
        grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        if grad and self.released and weight.requires_grad:
            raise RuntimeError(
                f"{type(module).__name__}'s weight is packed for evaluation (lladapt.evaluation."
                "packing.packed_linears): it takes no gradient there; train outside that context")
        stale = not self.released and weight._version != self.version
        if grad or stale or x.dtype != torch.float32 or x.device.type != "cpu":
            return torch.nn.functional.linear(x, self._dense(index), module.bias)
        kept = self.kept.take(index, x)
        if kept is not None:
            return kept
        y = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return y if len(self.modules) == 1 else self.kept.keep(index, x, y.split(self.sizes, dim=-1))

    def _dense(self, index: int) -> torch.Tensor:
        """Layer ``index``'s weight as a plain tensor (a slice of the unpacked stack when released)."""
        if not self.released:
            return self.modules[index].weight
        start = sum(self.sizes[:index])
        return self.packed.to_dense()[start : start + self.sizes[index]]

    def restore(self) -> None:
        self.kept.clear()
        dense = self.packed.to_dense() if self.released else None
        start = 0
        for module, size in zip(self.modules, self.sizes, strict=True):
            del module.forward
            if dense is not None:
                module.weight.data = dense if len(self.modules) == 1 else dense[start : start + size].clone()
            start += size


def _packable(module: Any) -> bool:
    import torch

    return (
        type(module) is torch.nn.Linear
        and module.weight.dtype == torch.float32 and module.weight.device.type == "cpu"
        and (module.bias is None or module.bias.dtype == torch.float32)
        and "forward" not in vars(module)  # someone already replaced its forward
        and not hasattr(module, "_hf_hook")  # accelerate places its weights call by call
    )


def _siblings(module: torch.nn.Linear, parent: Any, name: str, free: Callable[[Any], bool]) -> list[Any]:
    """``module`` and the layers beside it in ``parent`` that take the same input
    (:data:`SIBLINGS`) and can share its product: ``free`` (packable, not an adapter's,
    released), of its dtype, input width and bias presence, in :data:`SIBLINGS`' order."""
    names = next((names for names in SIBLINGS if name in names), (name,))
    beside = [getattr(parent, n, None) for n in names]
    return [m for m in beside if m is module or (
        free(m) and m.in_features == module.in_features and m.weight.dtype == module.weight.dtype
        and (m.bias is None) == (module.bias is None))]


@contextlib.contextmanager
def packed_linears(model: Any, enabled: bool = True) -> Iterator[int]:
    """While active, ``model``'s float32 CPU ``nn.Linear`` layers run on packed weights (see the
    module's docstring). Yields how many were packed: 0 when ``enabled`` is false, oneDNN is
    missing, or the model holds none."""
    packed: list[_Packed] = []
    if not enabled or not available():
        yield 0
        return
    # a weight held by two modules (a head tied to the embeddings) stays where it is
    owners = Counter(p.untyped_storage().data_ptr()
                     for _, p in model.named_parameters(remove_duplicate=False) if p.numel())
    # an adapter's own layers are small and read their weights directly (fused branches)
    adapter = {id(t) for _, t in getattr(model, "named_adapter_tensors", tuple)()}
    parents = {id(child): (module, name) for module in model.modules() for name, child in module.named_children()}
    layers = {id(m): m for m in model.modules() if _packable(m) and id(m.weight) not in adapter}

    def free(module: Any) -> bool:  # one of ``layers`` whose weight can be released
        return (id(module) in layers and not (module._forward_hooks or module._forward_pre_hooks)
                and owners[module.weight.untyped_storage().data_ptr()] == 1)

    done: set[int] = set()
    try:
        for module in layers.values():
            if id(module) in done:
                continue
            release = free(module)
            group = _siblings(module, *parents[id(module)], free) if release and id(module) in parents else [module]
            done.update(id(m) for m in group)
            packed.append(_Packed(group, release))
        yield sum(len(group.modules) for group in packed)
    finally:
        for layer in reversed(packed):
            layer.restore()
