"""The first step of a run, before any training: processes and device (accelerate), precision,
the plan, the trainable parameters (fp32 master weights, on the device), the optimizer and the
learning-rate schedule, gathered into the :class:`~lladapt.training.state.LoopState` that every
later step takes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lladapt.common.errors import LladaptError
from lladapt.common.processes import leave_together_at_exit
from lladapt.config import TrainSection
from lladapt.data.tokenization import Encoded
from lladapt.training.loss import label_tokens
from lladapt.training.plan import Batches, make_plan
from lladapt.training.precision import Precision, mixed_precision
from lladapt.training.schedule import make_scheduler
from lladapt.training.sharding import shard_base, use_fsdp
from lladapt.training.state import LoopState
from lladapt.training.trackers import accelerator_kwargs

if TYPE_CHECKING:  # pragma: no cover
    import torch


def prepare(
    model: torch.nn.Module,
    encoded: Sequence[Encoded],
    settings: TrainSection,
    *,
    learning_rate: float,
    pad_token_id: int,
    val_encoded: Sequence[Encoded],
    save: Callable[[Path], None] | None,
    checkpoint_dir: Path | None,
    run_config: Mapping[str, Any] | None,
    tracker_dir: Path | None,
) -> LoopState:
    """Check that the run can train, then set it up (the arguments are :func:`.loop.train`'s)."""
    import torch
    from accelerate import Accelerator

    if not encoded:
        raise ValueError("no training examples")
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),  # processes, device, reductions, trackers
                              **accelerator_kwargs(settings.report_to, tracker_dir))
    precision = Precision(mixed_precision(settings.precision), accelerator.device)
    world = accelerator.num_processes
    if world > 1:
        leave_together_at_exit()
    plan = make_plan(len(encoded), settings)
    if plan.per_step % world:
        raise LladaptError(
            f"train.batch_size / train.micro_batch_size = {plan.per_step} micro-batches per step "
            f"cannot be shared evenly by {world} processes"
        )
    params, dtypes = _trainable(model, precision)
    _place(model, accelerator.device)
    if settings.gradient_checkpointing:
        _enable_gradient_checkpointing(model)
    fsdp = use_fsdp(settings.distributed, world)
    if fsdp:
        shard_base(model, precision, world)
    lengths = [len(e.input_ids) for e in encoded]
    n_labels = [label_tokens(e) for e in encoded]
    batches = Batches(lengths, plan, settings)
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=settings.weight_decay)
    scheduler = make_scheduler(settings.lr_scheduler, optimizer, warmup_steps=settings.warmup_steps,
                               total_steps=plan.steps)
    return LoopState(
        model=model, settings=settings, accelerator=accelerator, precision=precision, plan=plan,
        batches=batches, encoded=encoded, lengths=lengths, n_labels=n_labels,
        pad_token_id=pad_token_id, val_encoded=val_encoded, params=params, dtypes=dtypes,
        optimizer=optimizer, scheduler=scheduler, checkpoint_dir=checkpoint_dir, save_adapter=save,
        run_config=run_config, sharded=fsdp,
    )


def _trainable(model: torch.nn.Module, precision: Precision) -> tuple[list[torch.nn.Parameter], list[torch.dtype]]:
    """The trainable parameters and their dtypes; under mixed precision they become fp32 (the
    optimizer and grad scaler want fp32 master weights) until the run ends."""
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    dtypes = [p.dtype for p in params]
    if precision.dtype is not None:
        for p in params:
            p.data = p.data.float()
    return params, dtypes


def _place(model: torch.nn.Module, device: torch.device) -> None:
    """Move the model to the training device, unless it is there already or was placed by its
    loader (quantized models, device maps: ``.to`` is refused or would undo the map)."""
    current = next(model.parameters()).device
    if current.type == device.type and (current.index or 0) == (device.index or 0):
        return
    if getattr(model, "hf_device_map", None) or getattr(model, "hf_quantizer", None) is not None:
        return
    model.to(device)


def _enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    from lladapt.common import hf_compat

    base = getattr(model, "base_model", model)
    if not getattr(base, "supports_gradient_checkpointing", False) or not hf_compat.enable_activation_checkpointing(base):
        raise LladaptError(
            f"train.gradient_checkpointing: the model ({type(base).__name__}) does not support "
            "gradient checkpointing; set it to false"
        )
