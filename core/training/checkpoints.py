"""Checkpoints that resume a run exactly.

``checkpoints/step-N/`` holds
  adapter/                 the adapter in its usual format (usable on its own)
  trainable.safetensors    the exact trainable tensors (fp32 master weights under mixed precision)
  optimizer.pt             optimizer and fp16 grad-scaler state
  scheduler.pt             learning-rate scheduler state
  rng.pt                   torch (CPU, CUDA), python and numpy RNG states; of every process
                           (``{"ranks": [...]}``) when several train, so each resumes its own
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
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lladapt.common.errors import LladaptError, WriteError
from lladapt.common.fileio import make_dirs, write_bytes, writing

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


def rank_rng_state(rng: Mapping[str, Any], rank: int, world: int) -> Mapping[str, Any]:
    """The RNG state process ``rank`` of ``world`` resumes with: its own, from a checkpoint of
    several processes; the one state of a one-process checkpoint (or of one written before
    checkpoints kept every process's, where all processes resume with the main one's)."""
    if "ranks" not in rng:
        return rng
    if len(rng["ranks"]) != world:
        raise LladaptError(f"the checkpoint holds the RNG states of {len(rng['ranks'])} processes; this run has {world}")
    return rng["ranks"][rank]


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
    rng: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``directory/step-N`` atomically; keep the newest ``keep`` up to step N (0: all).
    Returns its path.
    ``rng``: the RNG states to store (None: this process's, :func:`rng_state`).

    A write that fails (a full disk) is a :class:`~lladapt.common.errors.WriteError` naming the
    file as it would have been in ``step-N``; the partial folder is removed."""
    from safetensors.torch import save

    make_dirs(directory)
    final = directory / f"step-{step}"
    tmp = directory / f".step-{step}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        make_dirs(tmp)
        if save_adapter is not None:
            save_adapter(tmp / "adapter")
        write_bytes(tmp / TRAINABLE_FILE, save(trainable_state(model)))
        if best is not None:
            write_bytes(tmp / BEST_FILE, save(dict(best)))
        write_bytes(tmp / "optimizer.pt", _torch_bytes({
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler is not None else {}}))
        write_bytes(tmp / "scheduler.pt", _torch_bytes(scheduler.state_dict()))
        write_bytes(tmp / "rng.pt", _torch_bytes(dict(rng) if rng is not None else rng_state()))
        write_bytes(tmp / STATE_FILE, json.dumps({"step": step, **state}, default=str).encode("utf-8"), sync=True)
        with writing(final):
            if final.exists():  # a checkpoint of the same step from before a crash: replaced
                shutil.rmtree(final)
            os.rename(tmp, final)
    except WriteError as exc:
        raise exc.moved(tmp, final).add(f"the partial checkpoint {final.name} was removed") from exc.__cause__
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if keep:
        # among this run's checkpoints (up to this step): a stray or broken folder with a higher
        # step (an empty `step-10`, one a resume skipped) must not push the newest good ones out
        ours = [old for old in list_checkpoints(directory) if int(old.name.removeprefix("step-")) <= step]
        for old in ours[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _torch_bytes(obj: Any) -> bytes:
    """``torch.save`` into memory: written to disk by ``write_bytes``, a full disk is an
    ``OSError`` saying so, not torch's ``unexpected pos`` error."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


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
        state = _checked_state((path / STATE_FILE).read_bytes())
        trainable = load_file(str(path / TRAINABLE_FILE))
        best = load_file(str(path / BEST_FILE)) if (path / BEST_FILE).is_file() else None
        tensors = {name: torch.load(path / name, map_location="cpu", weights_only=True)
                   for name in ("optimizer.pt", "scheduler.pt", "rng.pt")}
    except Exception as exc:  # any unreadable file: the checkpoint is corrupt
        raise LladaptError(f"unreadable ({type(exc).__name__}: {exc})") from exc
    return Checkpoint(path, int(state["step"]), state, trainable, tensors["optimizer.pt"],
                      tensors["scheduler.pt"], tensors["rng.pt"], best)


class _TrainerState(BaseModel):
    """What a resume reads of ``trainer_state.json`` (the loop may write more, kept as it is)."""

    model_config = ConfigDict(strict=True, extra="allow")
    step: int = Field(ge=1)
    plan: dict[str, Any]
    orders: dict[Annotated[str, Field(pattern=r"^\d+$")], list[list[Annotated[int, Field(ge=0)]]]]
    losses: list[tuple[int, float]]
    val_losses: list[tuple[int, float]]
    best_step: int | None
    best_val: float | None
    # counts: whole numbers, which a reduction over processes may have written as floats
    tokens: int | float
    real: int | float
    padded: int | float
    window: tuple[float, int | float, int | float, int | float]
    seconds: float = 0.0


def _checked_state(data: bytes) -> dict[str, Any]:
    """``trainer_state.json`` parsed, each field a resume reads checked; a ``ValueError`` names the
    first field that is wrong (the checkpoint is then corrupt)."""
    try:
        _TrainerState.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"{STATE_FILE}: {where + ': ' if where else ''}{first['msg']}") from None
    return json.loads(data)


def latest_checkpoint(directory: Path, report: Callable[[str], None]) -> Checkpoint | None:
    """The newest complete checkpoint; partial or corrupt ones are reported and skipped. (The
    leftovers of interrupted writes are removed by :func:`remove_leftovers` once the resume goes
    ahead: a refused resume changes nothing.)"""
    for path in list_checkpoints(directory):
        try:
            return read_checkpoint(path)
        except LladaptError as exc:
            report(f"skipping checkpoint {path}: incomplete or corrupt: {exc}")
    return None


def remove_leftovers(directory: Path, report: Callable[[str], None]) -> None:
    """Remove what interrupted checkpoint writes left (``.step-N.tmp-XXXX``), saying so."""
    if directory.is_dir():
        for leftover in directory.glob(".step-*.tmp-*"):
            report(f"removing {leftover.name}: a checkpoint write that did not finish")
            shutil.rmtree(leftover, ignore_errors=True)


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
