"""What the training loop carries from step to step, and what it returns.

One object instead of the locals and closures of one long function: every step of the loop
(:mod:`.loop`) takes it, and a checkpoint (:mod:`.resume`) stores the part that changes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lladapt.training.sampler import padded_width

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from lladapt.config import TrainSection
    from lladapt.data.tokenization import Encoded
    from lladapt.training.plan import Batches, Plan
    from lladapt.training.precision import Precision


@dataclass
class TrainResult:
    steps: int
    epochs: float
    #: (step, mean loss per label token over the logging window)
    losses: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    checkpoints: list[Path] = field(default_factory=list)
    #: (step, validation loss)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None
    #: share of padding tokens over every micro-batch trained on
    padded_share: float = 0.0
    #: non-pad tokens over every micro-batch trained on
    real_tokens: int = 0
    resumed_from: int | None = None
    #: ``train.compile``: seconds spent compiling (a warm-up pass before the clock started;
    #: not in ``seconds``)
    compile_seconds: float = 0.0

    @property
    def first_loss(self) -> float | None:
        return self.losses[0][1] if self.losses else None

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1][1] if self.losses else None


@dataclass
class Window:
    """Sums since the last logging step."""

    loss: float = 0.0
    tokens: int = 0
    real: int = 0
    padded: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, loss: float, tokens: int, real: int, padded: int) -> None:
        self.loss += loss
        self.tokens += tokens
        self.real += real
        self.padded += padded


@dataclass
class LoopState:
    """One run's training state. The fields up to ``sharded`` are set once, when the run is
    prepared (:mod:`.prepare`); the rest change as it trains, and a checkpoint keeps them."""

    model: torch.nn.Module
    settings: TrainSection
    #: processes, device, reductions, trackers
    accelerator: Any
    precision: Precision
    plan: Plan
    batches: Batches
    encoded: Sequence[Encoded]
    #: tokens and label tokens of each training example, counted once
    lengths: list[int]
    n_labels: list[int]
    pad_token_id: int
    val_encoded: Sequence[Encoded]
    #: the trainable parameters, and the dtypes they are given back when training ends
    params: list[torch.nn.Parameter]
    dtypes: list[torch.dtype]
    optimizer: Any
    scheduler: Any
    #: where checkpoints go (None: nowhere), what writes the adapter into one, the run's config
    checkpoint_dir: Path | None
    save_adapter: Callable[[Path], None] | None
    run_config: Mapping[str, Any] | None
    #: the frozen base is sharded over the processes (:mod:`.sharding`)
    sharded: bool = False
    #: the frozen weights held in bf16 for the run (CPU bf16; :class:`.precision.FrozenInBf16`)
    frozen: Any = None

    result: TrainResult = field(default_factory=lambda: TrainResult(steps=0, epochs=0.0))
    #: the trainable tensors at the best validation loss (``keep_best``)
    best: dict[str, torch.Tensor] | None = None
    best_val: float = math.inf
    #: label, non-pad and padded tokens over every micro-batch trained on
    tokens_seen: int = 0
    real_total: int = 0
    padded_total: int = 0
    start_step: int = 1
    last_checkpoint: Path | None = None
    window: Window = field(default_factory=Window)
    #: ``perf_counter`` when training started, less the seconds trained before a resume
    started: float = 0.0

    @property
    def steps(self) -> int:
        return self.plan.steps

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def start_clock(self, saved: Mapping[str, Any] | None) -> None:
        """Open the first logging window and start the clock. After a resume both go on from the
        checkpoint's ``saved`` state: the seconds of training before an interruption count."""
        self.window = Window()
        if saved is not None:
            self.window.add(*saved["window"])
        self.started = time.perf_counter() - (saved.get("seconds", 0.0) if saved is not None else 0.0)

    def count(self, micro: Sequence[Sequence[int]], loss: float, label_tokens: int) -> None:
        """Add one optimizer step (its micro-batches of example indices, its summed loss and label
        tokens) to the logging window and the run's totals."""
        real = sum(self.lengths[i] for idx in micro for i in idx)
        multiple = self.settings.pad_to_multiple_of
        padded = sum(padded_width(max(self.lengths[i] for i in idx), multiple) * len(idx) for idx in micro)
        self.window.add(loss, label_tokens, real, padded)
        self.tokens_seen += label_tokens
        self.real_total += real
        self.padded_total += padded
