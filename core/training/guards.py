"""What stops a run on purpose: a non-finite loss or gradient norm, and Ctrl-C / SIGTERM (which
let the loop finish its step, save a checkpoint and exit with a message on how to resume)."""

from __future__ import annotations

import math
import signal
import threading
from pathlib import Path
from types import FrameType

from lladapt.common.errors import LladaptError


class NonFiniteLossError(LladaptError):
    """The loss or gradient norm became NaN or infinite."""


class TrainingInterrupted(LladaptError):
    """SIGINT or SIGTERM stopped the run after a checkpoint was written."""

    exit_code = 130


def check_finite(step: int, loss: float, grad_norm: float | None, last_checkpoint: Path | None) -> None:
    bad = [f"{name} is {value}" for name, value in (("loss", loss), ("gradient norm", grad_norm))
           if value is not None and not math.isfinite(value)]
    if bad:
        kept = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was written"
        raise NonFiniteLossError(
            f"training stopped at step {step}: {' and '.join(bad)} (try a lower learning_rate, "
            f"max_grad_norm, or precision: fp32); {kept}"
        )


class StopSignals:
    """A context that records SIGINT/SIGTERM instead of dying at once (main thread only)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.received = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def interrupted(signal_name: str, step: int, checkpoint: Path) -> TrainingInterrupted:
    return TrainingInterrupted(
        f"training stopped by {signal_name} after step {step}; checkpoint saved in {checkpoint}. "
        "To continue, run the same command again with --resume "
        "(Python: lladapt.api.run(config, resume=True))"
    )
