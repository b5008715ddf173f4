"""Trainable side branches on the Linear layers of a frozen model, installed with module hooks.

A branch computes ``delta = branch(host, x)`` and the hooks add it where the site's mode says:

* ``input``: the host Linear sees ``x + delta(x)`` (the paper code's ``mh_adapter``);
* ``output``: the host returns ``y + delta(y)`` (its ``output_adapter``);
* ``parallel``: the host returns ``y + delta(x)``; with a ``source`` module, ``x`` is the input of
  that other module (alongside a whole block: from its first projection to its last).

Hooks rather than wrapper modules: the base model's module tree and state-dict keys stay as they
were, the branch's parameters are registered as children of the host Linear (so their keys are
``<path>.lora_A.weight`` / ``<path>.adapter_down.weight``, the keys of PEFT and of the paper's
code), bitsandbytes ``Linear4bit`` / ``Linear8bitLt`` hosts work unchanged, and removing the hooks
and children restores the base model exactly.

Several adapters over one base (a server answering requests for different adapters in one batch):
:meth:`HostedBranch.share` moves the branch's children into a holder of their own, so that another
adapter of the same kind can attach at the same host, and gates the hook: the delta is computed
for, and added to, only the rows the gate names (:mod:`lladapt.adapters.rows`). One gate around
every branch's delta, whatever the branch computes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from lladapt import AdapterError

__all__ = [
    "Branch",
    "Gate",
    "HostedBranch",
    "InputTap",
    "branch_dtype",
    "install_branch",
    "is_quantized",
    "new_linear",
]

#: ``branch(host, x) -> delta`` (None: add nothing, e.g. a merged LoRA).
Branch = Callable[[nn.Module, torch.Tensor], "torch.Tensor | None"]


def is_quantized(module: nn.Module) -> bool:
    """True for bitsandbytes 4-bit / 8-bit Linear layers (weights that are not floats)."""
    weight = getattr(module, "weight", None)
    return weight is None or not torch.is_floating_point(weight)


def branch_dtype(host: nn.Module) -> torch.dtype:
    """The dtype of a branch beside ``host``: the host's weight dtype, or for a quantized host its
    compute dtype (float32 when it has none, as PEFT does)."""
    if not is_quantized(host):
        return host.weight.dtype
    compute = getattr(host, "compute_dtype", None)
    return compute if isinstance(compute, torch.dtype) else torch.float32


def new_linear(in_features: int, out_features: int, host: nn.Module) -> nn.Linear:
    """A bias-free Linear on the host's device (the meta device included) and branch dtype."""
    return nn.Linear(
        in_features, out_features, bias=False, device=host.weight.device, dtype=branch_dtype(host)
    )


def _first_arg(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    return args[0] if args else kwargs["input"]


class InputTap:
    """Records the input of a source module for a branch that reads it elsewhere (a parallel
    adapter alongside a whole block). The reading hook takes the value, so no activation is kept
    alive between forwards; gradient-checkpoint recomputation re-records it in the same order."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None

    def __call__(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.value = _first_arg(args, kwargs)

    def take(self, where: str) -> torch.Tensor:
        value, self.value = self.value, None
        if value is None:
            raise AdapterError(
                f"the parallel adapter at '{where}' found no recorded input: its source module "
                "did not run first in this forward"
            )
        return value


@dataclass
class HostedBranch:
    """The hooks of one branch on one host; :meth:`remove` takes them (and its children) away."""

    host: nn.Module
    handles: list[RemovableHandle] = field(default_factory=list)
    children: tuple[str, ...] = ()
    hooks: list[_BranchHook] = field(default_factory=list)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        for name in self.children:
            if name in self.host._modules:
                del self.host._modules[name]
            elif name in self.host._parameters:
                del self.host._parameters[name]

    def share(self, gate: Gate) -> nn.Module:
        """Move the branch's children out of the host into a holder (returned) that the hooks
        read them from, and apply the branch only to the rows ``gate()`` names."""
        holder = nn.Module()
        for name in self.children:
            if name in self.host._modules:
                holder.add_module(name, self.host._modules.pop(name))
            elif name in self.host._parameters:
                holder.register_parameter(name, self.host._parameters.pop(name))
        holder.train(self.host.training)
        for hook in self.hooks:
            hook.owner, hook.gate = holder, gate
        return holder


#: ``gate() -> rows``: None for every row, else the indices of the rows a branch applies to.
Gate = Callable[[], "torch.Tensor | None"]


def _add(target: torch.Tensor, delta: torch.Tensor | None) -> torch.Tensor:
    return target if delta is None else target + delta.to(target.dtype)


@dataclass
class _BranchHook:
    """What every hook does: ``branch(owner, x)`` added to ``target``, on the gate's rows only.
    ``owner`` holds the branch's children (the hooked module itself until :meth:`HostedBranch.share`)."""

    branch: Branch
    owner: nn.Module | None = None
    gate: Gate | None = None

    def added(self, module: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        owner = self.owner if self.owner is not None else module
        rows = self.gate() if self.gate is not None else None
        if rows is None:
            return _add(target, self.branch(owner, x))
        if rows.numel() == 0:
            return target
        delta = self.branch(owner, x.index_select(0, rows))
        return target if delta is None else target.index_add(0, rows, delta.to(target.dtype))


# The hooks are small classes rather than closures so that a hooked model can be deep-copied and
# pickled (each copy gets its own branch state, e.g. a LoRA's merged flag).


@dataclass
class _InputHook(_BranchHook):
    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        x = _first_arg(args, kwargs)
        x = self.added(module, x, x)
        return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "input": x})


@dataclass
class _OutputHook(_BranchHook):
    def __call__(self, module: nn.Module, args: tuple, kwargs: dict, out: Any) -> torch.Tensor:
        return self.added(module, out, out)


@dataclass
class _ParallelHook(_BranchHook):
    tap: InputTap | None = None
    where: str = ""

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict, out: Any) -> torch.Tensor:
        x = self.tap.take(self.where) if self.tap is not None else _first_arg(args, kwargs)
        return self.added(module, x, out)


def install_branch(
    host: nn.Module,
    mode: str,
    branch: Branch,
    *,
    source: nn.Module | None = None,
    where: str = "",
    children: tuple[str, ...] = (),
) -> HostedBranch:
    """Hook ``branch`` onto ``host`` in ``mode`` (``input``, ``output`` or ``parallel``); with
    ``source`` (parallel only) the branch reads that module's input instead of the host's."""
    hosted = HostedBranch(host, children=children)
    if source is not None and mode != "parallel":
        raise AdapterError(f"a source module needs mode 'parallel', not '{mode}' (at '{where}')")
    if mode == "input":
        hook: _BranchHook = _InputHook(branch)
        hosted.handles.append(host.register_forward_pre_hook(hook, with_kwargs=True))
    elif mode == "output":
        hook = _OutputHook(branch)
        hosted.handles.append(host.register_forward_hook(hook, with_kwargs=True))
    elif mode == "parallel":
        tap = None
        if source is not None:
            tap = InputTap()
            hosted.handles.append(source.register_forward_pre_hook(tap, with_kwargs=True))
        hook = _ParallelHook(branch, tap=tap, where=where)
        hosted.handles.append(host.register_forward_hook(hook, with_kwargs=True))
    else:
        raise AdapterError(f"unknown mode '{mode}' at '{where}'; modes: input, output, parallel")
    hosted.hooks.append(hook)
    return hosted
