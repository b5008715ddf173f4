"""Frozen ``nn.Linear`` layers of a CPU training run computed on weights packed once for oneDNN.

A frozen weight never changes during a run, yet ``F.linear`` hands it to the matmul in its plain
row-major layout at every call, and the library re-blocks it (or reads it strided) each time.
oneDNN can take a weight reordered once into its own blocked layout
(``torch.ops.mkldnn._reorder_linear_weight``, the op inductor's CPU ``freezing`` packs weights
with) and multiply by it directly (``torch.ops.mkldnn._linear_pointwise``). Measured on a 2-core
AMD EPYC (AVX-512 BF16, no AMX), SmolLM2's projections at 452-1,024 rows: 7-15% faster than
``F.linear`` in bf16 and 10-16% in fp32, with bf16 outputs equal to ``F.linear``'s bit for bit.

Only the forward matmul uses the packed copy; backward computes the input gradient from the plain
weight (``grad @ weight``, where packing gained 1-6% in bf16). The packed copy costs the weight's
size once more for the run (212 MB for SmolLM2's frozen projections in bf16).

An attention's q, k and v (:data:`SHARED_INPUT`), which read one input, are packed as one stacked
weight: one product for the three forward (the input cast once), and one for their input
gradient backward, with the stacked plain weights built at each call (1.1 MB for a SmolLM2
layer) rather than kept. That gradient is summed in the matmul's fp32 accumulator and rounded to
bf16 once, where three bf16 gradients were each cast to fp32 and added: the same to within bf16
rounding, not bit for bit.

Those two ops are torch internals (inductor's), not a public API: they are used here only, and
only where :func:`available` finds them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lladapt.common.shared_input import ATTENTION_INPUT, KeptOutputs

if TYPE_CHECKING:  # pragma: no cover
    import torch


#: sibling layers that an attention calls on one input (LLaMA's, OPT's and GPT-J's q/k/v), packed as
#: one stacked weight and run as one product (see :class:`_Packed`). Measured on the machine above,
#: one SmolLM2 layer's q/k/v at 1,024 rows, forward and backward from an fp32 input in bf16: 6.6-7.3
#: ms stacked against 8.7-9.4 apart (the input cast once, one product each way, the gradients
#: summed inside the matmul instead of cast to fp32 and added). LLaMA's gate/up, stacked the same
#: way, were no faster (18.1-19.2 against 18.2-20.9 ms), and slower with their weights stacked for
#: backward at each call (23.6-24.3 ms), so they are left apart.
SHARED_INPUT = ATTENTION_INPUT

#: the rows oneDNN is told a matmul will have when it packs a weight (a hint: any other count
#: computes the same, and 452-1,024 rows ran as fast on weights packed for 1,024 as for their own).
ROWS_HINT = 1024


def available() -> bool:
    """Whether this torch has oneDNN and the two ops (see the module docstring)."""
    import torch

    ops = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight")
            and hasattr(ops, "_linear_pointwise"))


def frozen_linears(model: torch.nn.Module, dtype: torch.dtype) -> list[torch.nn.Linear]:
    """The plain ``nn.Linear`` layers of ``model`` (not subclasses that compute otherwise, such as
    quantized ones) whose weight is frozen and in ``dtype``, less one shared with the input
    embedding (a tied output head, which the chunked loss multiplies by itself); each weight
    once."""
    import torch

    get_embeddings = getattr(model, "get_input_embeddings", None)
    embedding = get_embeddings() if callable(get_embeddings) else None
    seen = {id(embedding.weight)} if embedding is not None else set()
    found = []
    for module in model.modules():
        if (isinstance(module, torch.nn.Linear) and type(module).forward is torch.nn.Linear.forward
                and not module.weight.requires_grad and module.weight.dtype == dtype
                and id(module.weight) not in seen):
            seen.add(id(module.weight))
            found.append(module)
    return found


def _function() -> type:
    global _FUNCTION
    if _FUNCTION is None:
        import torch

        class PackedLinear(torch.autograd.Function):
            """``x @ weight.T + bias`` through the packed weight (the stacked weights of
            ``weights``; with ``sizes``, the product split into each layer's output); the gradient
            of ``x`` only, by one matmul of the outputs' gradients, side by side, with the
            stacked weights."""

            @staticmethod
            def forward(ctx: Any, x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None,
                        sizes: list[int] | None, *weights: torch.Tensor) -> Any:
                ctx.save_for_backward(*weights)
                out = torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, bias, "none", [], "")
                return out if sizes is None else out.split(sizes, dim=-1)

            @staticmethod
            def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
                weights = ctx.saved_tensors
                grad_x = None
                if ctx.needs_input_grad[0]:
                    grad = grads[0] if len(grads) == 1 else torch.cat(grads, dim=-1)
                    grad_x = grad.matmul(weights[0] if len(weights) == 1 else torch.cat(weights))
                return grad_x, None, None, None, *(None for _ in weights)

        _FUNCTION = PackedLinear
    return _FUNCTION


_FUNCTION: type | None = None


class _Packed:
    """Frozen Linear layers that read one input (one layer, or an attention's q/k/v:
    :data:`SHARED_INPUT`) on one packed weight, their weights stacked. The first of them called
    with an input computes every layer's output in one product and keeps the others' until their
    layer is called with that same tensor (transformers' attention calls q, k and v on one
    ``hidden_states``); a layer called with another input gets the product computed anew. A layer
    whose weight is not in the packed dtype for the moment (the fp32 originals, put back around a
    checkpoint's ``save`` callback: ``FrozenInBf16.fp32``) computes with ``F.linear`` on it."""

    def __init__(self, modules: list[torch.nn.Linear]) -> None:
        import torch

        weights = [m.weight.detach() for m in modules]
        self.modules, self.dtype = modules, weights[0].dtype
        self.sizes = [m.out_features for m in modules] if len(modules) > 1 else None
        self.packed = torch.ops.mkldnn._reorder_linear_weight(
            weights[0] if len(weights) == 1 else torch.cat(weights), ROWS_HINT)
        biases = [m.bias.detach().to(self.dtype) for m in modules if m.bias is not None]
        self.bias = (biases[0] if len(biases) == 1 else torch.cat(biases)) if biases else None
        self.kept = KeptOutputs()

    def output(self, index: int, x: torch.Tensor) -> torch.Tensor:
        module = self.modules[index]
        if module.weight.dtype != self.dtype:  # fp32 originals put back for a moment (FrozenInBf16.fp32)
            import torch

            return torch.nn.functional.linear(x, module.weight, module.bias)
        kept = self.kept.take(index, x)
        if kept is not None:
            return kept
        weights = [m.weight for m in self.modules]
        out = _function().apply(x.to(self.dtype), self.packed, self.bias, self.sizes, *weights)
        return out if self.sizes is None else self.kept.keep(index, x, out)


class _PackedForward:
    """A frozen Linear's forward on its packed weight (set as the module's ``forward`` for the
    run; the module's hooks run around it as around its own)."""

    def __init__(self, packed: _Packed, index: int) -> None:
        self.packed, self.index = packed, index

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.packed.output(self.index, x)


def _groups(model: torch.nn.Module, modules: list[torch.nn.Linear]) -> list[list[torch.nn.Linear]]:
    """``modules`` in groups that read one input: the :data:`SHARED_INPUT` layers of one parent
    among them with the input width and bias presence of the first; every other layer alone."""
    parents = {id(child): (parent, name) for parent in model.modules() for name, child in parent.named_children()}
    chosen = {id(m) for m in modules}
    groups, done = [], set()
    for module in modules:
        if id(module) in done:
            continue
        parent, name = parents.get(id(module), (None, ""))
        group = [module]
        if name in SHARED_INPUT:
            beside = [getattr(parent, n, None) for n in SHARED_INPUT]
            group = [m for m in beside if m is module or (
                id(m) in chosen and id(m) not in done and m.in_features == module.in_features
                and (m.bias is None) == (module.bias is None))]
        done.update(id(m) for m in group)
        groups.append(group)
    return groups


@contextlib.contextmanager
def packed_frozen_linears(model: torch.nn.Module, dtype: torch.dtype | None) -> Iterator[int]:
    """The frozen ``dtype`` Linear layers of ``model`` (:func:`frozen_linears`) computed on
    packed weights for the duration; yields how many (0, a context that does nothing, where
    ``dtype`` is None or :func:`available` is false). The output head is left as it is (the
    chunked loss multiplies by its weight itself), and so is a layer whose bias trains or that
    already has a ``forward`` of its own instance (an accelerate hook)."""
    modules = []
    if dtype is not None and available():
        get_head = getattr(model, "get_output_embeddings", None)
        head = get_head() if callable(get_head) else None
        modules = [m for m in frozen_linears(model, dtype) if m is not head
                   and "forward" not in vars(m) and (m.bias is None or not m.bias.requires_grad)]
    packs = [_Packed(group) for group in _groups(model, modules)] if modules else []
    try:
        for pack in packs:
            for index, module in enumerate(pack.modules):
                module.forward = _PackedForward(pack, index)
        yield len(modules)
    finally:
        for pack in packs:
            pack.kept.clear()
            for module in pack.modules:
                vars(module).pop("forward", None)
