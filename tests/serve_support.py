"""Helpers shared by the serving tests (not a test module): small trained runs on stories260k
(LoRA, series, prefix; a few steps each, made once per test session), and a real uvicorn server
on 127.0.0.1 in a thread over them (``lladapt.serving.server.BackgroundServer``, started once per
session)."""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from lladapt import testing
from lladapt.serving.server import BackgroundServer, free_port

__all__ = ["INSTRUCTIONS", "RUNS", "BackgroundServer", "free_port", "one_thread", "running_server", "served",
           "trained_runs"]

#: the adapters the serving tests train: LoRA and series share the base's forward passes,
#: prefix tuning gets batches of its own.
RUNS = {
    "lora": {"adapter": {"name": "lora", "r": 4, "alpha": 8}, "learning_rate": 0.02},
    "series": {"adapter": {"name": "series", "bottleneck_size": 8, "init": "mam"}, "learning_rate": 0.02},
    "prefix": {"adapter": {"name": "prefix", "num_virtual_tokens": 4}, "learning_rate": 0.03},
}
#: instructions of different lengths (batches need padding).
INSTRUCTIONS = [
    "Tell me a story about a dog.",
    "Once upon a time there was a little girl named Lily who loved to play in the park.",
    "What is 2 plus 3?",
    "Write about a cat and a big red ball.",
]


def run_config(model: Path, out: Path, adapter: dict, learning_rate: float) -> dict:
    return {
        "model": str(model),
        "adapter": adapter,
        "data": {"train": [{"name": "arith", "limit": 16}], "cutoff_len": 64},
        # fp32: the same trained adapters on every CPU ("auto" is bf16 where the CPU has native bf16)
        "train": {"max_steps": 4, "batch_size": 4, "micro_batch_size": 4, "learning_rate": learning_rate,
                  "warmup_steps": 0, "logging_steps": 2, "save_steps": 0, "precision": "fp32"},
        "output_dir": str(out),
    }


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread meanwhile (tiny models: much faster when other jobs share the cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@cache
def trained_runs(root: Path) -> dict[str, Path]:
    """Run folders (config.json + adapter/) of :data:`RUNS`, trained under ``root``."""
    from lladapt.api import run

    model = testing.stories260k_dir()
    if model is None:
        import pytest

        pytest.skip("no shared assets (stories260k)")
    folders = {}
    for name, recipe in RUNS.items():
        out = root / name
        with one_thread():
            run(run_config(model, out, **recipe), echo=lambda _: None)
        folders[name] = out
    return folders


@cache
def served(root: Path):
    """The :class:`ServedModels` of the trained runs (base, lora, series, prefix)."""
    from lladapt.serving.models import load_served
    from lladapt.serving.spec import serve_spec

    runs = trained_runs(root)
    return load_served(serve_spec([runs[name] for name in RUNS]), max_rows=32)


@cache
def running_server(root: Path) -> BackgroundServer:
    """A real server over :func:`served`, shared by the test modules of one session."""
    from lladapt.serving.app import create_app

    server = BackgroundServer(create_app(served(root)))
    atexit.register(server.stop)
    return server
