"""Mixed precision: torch's autocast and (fp16) gradient scaler around fp32 master weights.

Not accelerate's ``mixed_precision``: accelerate keeps it in a process-wide singleton
(``AcceleratorState``) that refuses a second, different value in the same Python process, so two
runs with different ``train.precision`` could not follow each other in one session."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from lladapt.errors import LladaptError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def mixed_precision(precision: str) -> str:
    """``no``, ``fp16`` or ``bf16`` for a ``train.precision`` value on this machine."""
    import torch

    if precision == "fp32":
        return "no"
    if precision == "fp16" and not torch.cuda.is_available():
        raise LladaptError("train.precision: fp16 needs a CUDA GPU; on the CPU use fp32 (or bf16)")
    if precision in ("fp16", "bf16"):
        return precision
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


class Precision:
    def __init__(self, mode: str, device: torch.device) -> None:
        import torch

        self.mode, self.device = mode, device
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mode)
        self.scaler = torch.amp.GradScaler(device.type) if mode == "fp16" else None

    def autocast(self) -> Any:
        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: Any) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: Any) -> bool:
        """The optimizer step; False when the fp16 scaler skipped it (inf/NaN gradients)."""
        if self.scaler is None:
            optimizer.step()
            return True
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= before

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
