"""The training loop: AdamW over the adapter's parameters, warm-up then decay, gradient
accumulation (batch = micro batch x accumulation, the paper's 16 = 4 x 4), mixed precision on a
GPU through accelerate, fp32 on the CPU, periodic adapter checkpoints and a JSONL loss log."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lladapt import hf_compat
from lladapt.config import TrainSection
from lladapt.tokenization import Encoded, collate_for_training

if TYPE_CHECKING:  # pragma: no cover
    import torch

Logger = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    steps: int
    epochs: float
    #: (step, mean loss over the logging window)
    losses: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    checkpoints: list[Path] = field(default_factory=list)

    @property
    def first_loss(self) -> float | None:
        return self.losses[0][1] if self.losses else None

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1][1] if self.losses else None


def mixed_precision(precision: str) -> str:
    """accelerate's mixed-precision mode for a ``train.precision`` value."""
    import torch

    if precision == "fp32":
        return "no"
    if precision in ("fp16", "bf16"):
        return precision
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def total_steps(n_micro_batches: int, accumulation: int, train: TrainSection) -> int:
    if train.max_steps:
        return train.max_steps
    return max(1, math.ceil(train.epochs * n_micro_batches / accumulation))


def train(
    model: torch.nn.Module,
    encoded: Sequence[Encoded],
    settings: TrainSection,
    *,
    learning_rate: float,
    pad_token_id: int,
    save: Callable[[Path], None] | None = None,
    checkpoint_dir: Path | None = None,
    log: Logger | None = None,
) -> TrainResult:
    """Train the trainable parameters of ``model`` on ``encoded`` examples.

    ``save(path)`` writes an adapter checkpoint (every ``save_steps`` into ``checkpoint_dir``).
    """
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    if not encoded:
        raise ValueError("no training examples")
    set_seed(settings.seed)
    accumulation = settings.batch_size // settings.micro_batch_size
    accelerator = Accelerator(
        gradient_accumulation_steps=accumulation,
        mixed_precision=mixed_precision(settings.precision),
        cpu=not torch.cuda.is_available(),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if accelerator.mixed_precision != "no":
        for p in params:  # the optimizer and grad scaler want fp32 master weights
            p.data = p.data.float()
    generator = torch.Generator().manual_seed(settings.seed)
    loader = DataLoader(
        list(encoded),
        batch_size=settings.micro_batch_size,
        shuffle=True,
        generator=generator,
        collate_fn=lambda batch: collate_for_training(batch, pad_token_id),
    )
    steps = total_steps(len(loader), accumulation, settings)
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=settings.weight_decay)
    scheduler = get_scheduler(
        settings.lr_scheduler if settings.lr_scheduler != "constant" else "constant_with_warmup",
        optimizer,
        num_warmup_steps=min(settings.warmup_steps, steps),
        num_training_steps=steps,
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if settings.gradient_checkpointing:
        _enable_gradient_checkpointing(model)
    model.train()
    result = TrainResult(steps=0, epochs=0.0)
    window: list[float] = []
    started = time.perf_counter()
    step = 0
    while step < steps:
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and settings.max_grad_norm:
                    accelerator.clip_grad_norm_(params, settings.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            window.append(loss.detach().float().item())
            if not accelerator.sync_gradients:
                continue
            step += 1
            if step % settings.logging_steps == 0 or step == steps or step == 1:
                mean = sum(window) / len(window)
                result.losses.append((step, mean))
                if log:
                    log({"step": step, "loss": round(mean, 6), "lr": scheduler.get_last_lr()[0],
                         "seconds": round(time.perf_counter() - started, 2)})
                window.clear()
            if save and checkpoint_dir and settings.save_steps and step % settings.save_steps == 0 and step < steps:
                path = checkpoint_dir / f"step-{step}"
                save(path)
                result.checkpoints.append(path)
            if step >= steps:
                break
    model.eval()
    result.steps = step
    result.epochs = step * accumulation / max(1, len(loader))
    result.seconds = time.perf_counter() - started
    return result


def _enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    hf_compat.enable_activation_checkpointing(getattr(model, "base_model", model))


def jsonl_logger(path: Path, echo: Logger | None = None) -> Logger:
    """A logger that appends one JSON line per record to ``path`` (and echoes it)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def log(record: dict[str, Any]) -> None:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if echo:
            echo(record)

    return log
