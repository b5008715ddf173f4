"""Checkpoints of a run cut off after step 2 of 3: any file missing or truncated, the state file
edited, leftovers of interrupted writes, stray folders, a broken metrics.jsonl; resumed with
``lladapt train --resume``. A resume that goes ahead (from an intact checkpoint, or from step 1)
must end with the uninterrupted run's adapter, and must have said which checkpoints it skipped."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.cli_property import Outcome, PropertyFailed, run_cli

FILES = ["trainable.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "trainer_state.json",
         "adapter/adapter_model.safetensors", "adapter/adapter_config.json"]
REQUIRED = FILES[:5]
MUTATIONS = ["delete", "truncate", "truncate", "state", "leftover", "empty_step", "stray_file", "metrics"]


def make_pristine(root: Path, model: str) -> tuple[Path, Path, dict[str, Any]]:
    """A run config, its folder as a run killed after checkpoint 2 of 3 leaves it, and the
    uninterrupted run's adapter tensors."""
    from safetensors.torch import load_file

    from lladapt.api import run

    out = root / "run"
    config = {"model": model, "adapter": {"name": "lora", "r": 2, "alpha": 4, "dropout": 0.1},
              "data": {"train": [{"name": "arith", "limit": 8}], "cutoff_len": 48}, "output_dir": "run",
              "train": {"max_steps": 3, "batch_size": 4, "micro_batch_size": 2, "learning_rate": 0.01,
                        "save_steps": 1, "logging_steps": 1, "progress": "none"}}
    with _cwd(root):  # output_dir is relative: the same config resumes a copy anywhere
        run(config, echo=lambda _: None)
    reference = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    for name in ("adapter", "trained.json", "results.json"):
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    path = root / "config.json"
    path.write_text(json.dumps(config))
    return path, out, reference


@contextlib.contextmanager
def _cwd(folder: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


@dataclass(frozen=True)
class CheckpointCase:
    mutations: tuple[tuple[str, int, int], ...]  # (kind, step, seed)


def checkpoint_cases() -> st.SearchStrategy[CheckpointCase]:
    one = st.tuples(st.sampled_from(MUTATIONS), st.sampled_from([1, 2, 2]), st.integers(min_value=0, max_value=2**32))
    return st.builds(CheckpointCase, st.lists(one, min_size=1, max_size=3).map(tuple))


def _mutate(out: Path, kind: str, step: int, seed: int) -> bool:
    """Apply one mutation; True when it broke a file resuming from ``step`` needs."""
    rng = random.Random(seed)
    folder = out / "checkpoints" / f"step-{step}"
    name = rng.choice(FILES)
    target = folder / name
    if kind == "delete" and target.exists():
        target.unlink()
        return name in REQUIRED
    if kind == "truncate" and target.is_file():
        data = target.read_bytes()
        target.write_bytes(data[: rng.randrange(len(data))] if data else b"")
        return name in REQUIRED
    if kind == "state" and (folder / "trainer_state.json").is_file():
        try:
            state = json.loads((folder / "trainer_state.json").read_text())
        except ValueError:
            return False
        key = rng.choice(sorted(state))
        if rng.random() < 0.5:
            del state[key]
        else:
            state[key] = rng.choice([None, "x", -1, [], {}, 1e300, [[1, "a"]], {"0": "x"}])
        (folder / "trainer_state.json").write_text(json.dumps(state))
        return True
    if kind == "leftover":
        shutil.copytree(folder, out / "checkpoints" / f".step-{step + 1}.tmp-{seed % 10**8:08d}", dirs_exist_ok=True)
    elif kind == "empty_step":
        (out / "checkpoints" / f"step-{rng.choice([3, 7, 10])}").mkdir(exist_ok=True)
    elif kind == "stray_file":
        (out / "checkpoints" / rng.choice(["step-9", "step-x", "notes.txt"])).write_text("x")
    elif kind == "metrics":
        lines = (out / "metrics.jsonl").read_text().splitlines(keepends=True)
        index = rng.randrange(len(lines) + 1)
        lines.insert(index, rng.choice(['{"step": 2', "{}\n", "[]\n", '{"step": "x"}\n', "\n", "💥\n"]))
        (out / "metrics.jsonl").write_text("".join(lines))
    return False


def run_checkpoint_case(case: CheckpointCase, workdir: Path, pristine: tuple[Path, Path, dict[str, Any]]) -> Outcome:
    from safetensors.torch import load_file

    config_path, source, reference = pristine
    out = workdir / "run"
    shutil.copytree(source, out)
    path = workdir / "config.json"
    shutil.copyfile(config_path, path)
    broken = {step for kind, step, seed in case.mutations if _mutate(out, kind, step, seed)}
    with _cwd(workdir):
        outcome = run_cli("checkpoint", ["train", str(path), "--resume"], [workdir])
    if outcome.exit_code == 0:
        tensors = load_file(str(out / "adapter" / "adapter_model.safetensors"))
        diff = max((tensors[k] - reference[k]).abs().max().item() for k in reference)
        if tensors.keys() != reference.keys() or diff > 1e-6:
            raise PropertyFailed(f"{case}: the resumed adapter differs from the uninterrupted run's by {diff}")
        if 2 in broken and not (out / "checkpoints" / "step-2").is_dir():
            raise PropertyFailed(f"{case}: the broken checkpoint step-2 was removed")
    return outcome
