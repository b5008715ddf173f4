"""Checkpoints that resume a run exactly.

``checkpoints/step-N/`` holds
  adapter/                 the adapter in its usual format (usable on its own)
  trainable.safetensors    the exact trainable tensors (fp32 master weights under mixed precision)
  optimizer.pt             optimizer and fp16 grad-scaler state
  scheduler.pt             learning-rate scheduler state
  rng.pt                   torch (CPU, CUDA), python and numpy RNG states
  trainer_state.json       step, data position and this epoch's batch order, loss history, the
                           resolved config; written last

A checkpoint is written into ``.step-N.tmp-XXXX`` and renamed when complete, so a kill during the
write leaves the previous checkpoints as they were. Only tensors and plain containers are stored:
``.pt`` files are read with ``torch.load(weights_only=True)``, never unpickled.

accelerate's ``save_state`` is not used: it pickles the RNG states (read back with
``weights_only=False``) and knows nothing of the data position this loop keeps.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lladapt.common.errors import LladaptError

if TYPE_CHECKING:  # pragma: no cover
    import torch

STATE_FILE = "trainer_state.json"
TRAINABLE_FILE = "trainable.safetensors"
BEST_FILE = "best.safetensors"
_FILES = (TRAINABLE_FILE, "optimizer.pt", "scheduler.pt", "rng.pt", STATE_FILE)
_STEP_DIR = re.compile(r"^step-(\d+)$")

#: config keys that may change between a run and its resume (they do not change the training).
NON_RECIPE_KEYS = (
    "output_dir", "eval", "train.logging_steps", "train.save_steps", "train.save_total_limit",
    "train.progress", "train.eval_steps", "model.tokenizer", "data.data_dir", "data.overlap",
    "train.report_to",
)


@dataclass
class Checkpoint:
    path: Path
    step: int
    state: dict[str, Any]
    trainable: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    best: dict[str, torch.Tensor] | None = None


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    import torch

    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if params.keys() != tensors.keys():
        missing = sorted(params.keys() - tensors.keys())[:3]
        extra = sorted(tensors.keys() - params.keys())[:3]
        raise LladaptError(f"the checkpoint's tensors do not match the model's adapter (missing {missing}, unexpected {extra})")
    with torch.no_grad():
        for name, p in params.items():
            if p.shape != tensors[name].shape:
                raise LladaptError(f"checkpoint tensor {name}: shape {tuple(tensors[name].shape)}, model {tuple(p.shape)}")
            p.copy_(tensors[name].to(p.dtype))


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype("int64")), "pos": pos,
                  "has_gauss": has_gauss, "cached": cached},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    directory: Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    state: Mapping[str, Any],
    scaler: Any = None,
    save_adapter: Callable[[Path], Any] | None = None,
    best: Mapping[str, torch.Tensor] | None = None,
    keep: int = 0,
) -> Path:
    """Write ``directory/step-N`` atomically; keep the newest ``keep`` (0: all). Returns its path."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step}"
    tmp = directory / f".step-{step}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        if save_adapter is not None:
            save_adapter(tmp / "adapter")
        save_file(trainable_state(model), str(tmp / TRAINABLE_FILE))
        if best is not None:
            save_file(dict(best), str(tmp / BEST_FILE))
        torch.save({"optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else {}}, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        _write_last(tmp / STATE_FILE, {"step": step, **state})
        if final.exists():  # a checkpoint of the same step from before a crash: replaced
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if keep:
        for old in list_checkpoints(directory)[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _write_last(path: Path, data: Mapping[str, Any]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, default=str)
        fh.flush()
        os.fsync(fh.fileno())


def list_checkpoints(directory: Path) -> list[Path]:
    """``step-N`` folders, newest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def read_checkpoint(path: Path) -> Checkpoint:
    """Load one checkpoint; :class:`LladaptError` says what is missing or unreadable."""
    import torch
    from safetensors.torch import load_file

    missing = [name for name in _FILES if not (path / name).is_file()]
    if missing:
        raise LladaptError(f"missing {', '.join(missing)}")
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        trainable = load_file(str(path / TRAINABLE_FILE))
        best = load_file(str(path / BEST_FILE)) if (path / BEST_FILE).is_file() else None
        tensors = {name: torch.load(path / name, map_location="cpu", weights_only=True)
                   for name in ("optimizer.pt", "scheduler.pt", "rng.pt")}
    except Exception as exc:  # any unreadable file: the checkpoint is corrupt
        raise LladaptError(f"unreadable ({type(exc).__name__}: {exc})") from exc
    return Checkpoint(path, int(state["step"]), state, trainable, tensors["optimizer.pt"],
                      tensors["scheduler.pt"], tensors["rng.pt"], best)


def latest_checkpoint(directory: Path, report: Callable[[str], None]) -> Checkpoint | None:
    """The newest complete checkpoint; partial or corrupt ones are reported and skipped, and
    leftovers of interrupted writes are removed."""
    if directory.is_dir():
        for leftover in directory.glob(".step-*.tmp-*"):
            report(f"removing {leftover.name}: a checkpoint write that did not finish")
            shutil.rmtree(leftover, ignore_errors=True)
    for path in list_checkpoints(directory):
        try:
            return read_checkpoint(path)
        except LladaptError as exc:
            report(f"skipping checkpoint {path}: incomplete or corrupt: {exc}")
    return None


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: data}


def recipe_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two resolved configs, ignoring keys that do not
    change the training (:data:`NON_RECIPE_KEYS`); each as ``key: old -> new``."""
    a, b = _flatten(old), _flatten(new)

    def ignored(key: str) -> bool:
        return any(key == k or key.startswith(k + ".") for k in NON_RECIPE_KEYS)

    return [f"{key}: {a.get(key)!r} -> {b.get(key)!r}"
            for key in sorted(a.keys() | b.keys()) if not ignored(key) and a.get(key) != b.get(key)]
