"""Sharding the frozen base model over the processes (``train.distributed: fsdp``), with FSDP2
(``torch.distributed.fsdp.fully_shard``).

Each decoder layer, then the whole base model, is a ``fully_shard`` unit: every process keeps
1/N of each frozen base weight and all-gathers a layer's weights just before the layer runs
(forward, and again for backward), freeing them after. The adapter's parameters are left out of
FSDP (``ignored_params``): they stay whole on every process, so the loop's one explicit gradient
reduction per step, the optimizer, clipping, checkpoints and the saved adapter are those of the
data-parallel path unchanged. An adapter is a small fraction of the model; the base weights are
what needs sharding.

Every process must run the same number of forward and backward passes (each all-gathers), so a
step whose micro-batches do not divide evenly gives the processes with one fewer a pass of
weight zero (:func:`lladapt.training.loop.backward_step`).

``train.distributed`` chooses: ``ddp`` (every process holds the whole base), ``fsdp``, or
``auto`` (the default): ``fsdp`` when ``accelerate launch`` was told to use FSDP (``--use_fsdp``,
or an ``accelerate config`` that selects it, which sets ``ACCELERATE_USE_FSDP``), else ``ddp``.
A value in the run config wins over the launcher's.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from lladapt.common.errors import LladaptError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from lladapt.training.precision import Precision


def use_fsdp(setting: str, world: int) -> bool:
    """Whether this run shards its base model: ``train.distributed`` (``auto`` follows the
    launcher), and only with more than one process."""
    if setting == "auto":
        setting = "fsdp" if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" else "ddp"
    return setting == "fsdp" and world > 1


def shard_base(model: torch.nn.Module, precision: Precision, world: int) -> None:
    """``fully_shard`` each decoder layer of the adapted ``model``'s base, then the base itself,
    over a mesh of ``world`` processes; the trainable (adapter) parameters are not sharded.

    The weights are gathered in their own dtype and mixed precision stays the loop's autocast,
    so a sharded run computes what a data-parallel one does. (FSDP's own ``param_dtype`` would
    also cast the norms' weights and the residual stream to bf16: measured on a tiny llama, the
    adapter then drifted 1e-2 from the one-process run's.)"""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    layout = getattr(model, "layout", None)
    base = getattr(model, "base_model", None)
    if layout is None or base is None:
        raise LladaptError("train.distributed: fsdp shards the base model of an adapted model; this model has no adapter")
    if getattr(base, "hf_quantizer", None) is not None:
        raise LladaptError(
            "train.distributed: fsdp does not shard a quantized base (model.quantization): 4-bit and "
            "8-bit weights are already small; train it with train.distributed: ddp, each process "
            "holding the quantized base"
        )
    mesh = init_device_mesh(precision.device.type, (world,))
    trainable = {p for p in model.parameters() if p.requires_grad}
    for layer in base.get_submodule(layout.layers):
        fully_shard(layer, mesh=mesh, ignored_params=trainable & set(layer.parameters()))
    fully_shard(base, mesh=mesh, ignored_params=trainable)


def sharded(model: torch.nn.Module) -> bool:
    """Whether ``model`` (or its base) was sharded by :func:`shard_base`."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(getattr(model, "base_model", model), FSDPModule)


def unshard_for_inference(model: torch.nn.Module) -> None:
    """Gather every sharded weight for good (each process then holds the whole base again), so
    that the processes can run different forward passes, as a data-parallel evaluation does."""
    from torch.distributed.fsdp import FSDPModule

    for module in getattr(model, "base_model", model).modules():
        if isinstance(module, FSDPModule):
            module.unshard()
            module.set_reshard_after_forward(False)
