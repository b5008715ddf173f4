"""Shared pieces of the trainer tests: a small real run config (stories260k + LoRA with dropout,
so the RNG state matters), a tiny model with a few trainable tensors, random encoded examples."""

from __future__ import annotations

import random

from lladapt.data.tokenization import IGNORE_INDEX, Encoded


def run_config(model_dir, out, **train):
    return {
        "model": str(model_dir),
        "adapter": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.1},
        "data": {"train": [{"name": "arith", "limit": 24}], "cutoff_len": 64},
        "train": {"max_steps": 8, "batch_size": 4, "micro_batch_size": 2, "learning_rate": 0.01,
                  "warmup_steps": 2, "logging_steps": 1, "save_steps": 2, "save_total_limit": 0,
                  "progress": "plain", **train},
        "output_dir": str(out),
    }


def tiny_trainable(seed: int = 0):
    """A tiny random llama whose attention projections of layer 0 are the trainable part."""
    from lladapt.testing import tiny_model

    model = tiny_model("llama", seed=seed)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("model.layers.0.self_attn.")
    return model


def random_examples(n: int, seed: int = 0, low: int = 3, high: int = 40) -> list[Encoded]:
    """``n`` examples of unequal lengths; some have their first tokens masked (a prompt)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ids = [rng.randrange(3, 128) for _ in range(rng.randint(low, high))]
        masked = rng.randint(0, len(ids) // 2) if i % 2 else 0
        out.append(Encoded(ids, [IGNORE_INDEX] * masked + ids[masked:]))
    return out


def adapter_tensors(out):
    """The tensors of the final adapter a run wrote into ``out``."""
    from safetensors.torch import load_file

    return load_file(out / "adapter" / "adapter_model.safetensors")


def max_diff(a, b):
    """The largest absolute difference between two adapters' tensors (same keys required)."""
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def uninterrupted_adapter(tmp_path_factory, **train):
    """The final adapter of a whole, uninterrupted :func:`run_config` run (``train``: its
    overrides) on stories260k; skips without the shared assets."""
    import pytest

    from lladapt.api import run
    from lladapt.testing import stories260k_dir

    if stories260k_dir() is None:
        pytest.skip("../shared/models/stories260k is absent")
    out = tmp_path_factory.mktemp("full") / "run"
    run(run_config(stories260k_dir(), out, **train), echo=lambda _: None)
    return adapter_tensors(out)


def two_steps(model, precision: str = "bf16") -> None:
    """Train ``model`` for 2 steps of 2 micro-batches of 2 rows in ``precision``."""
    from lladapt.config import TrainSection
    from lladapt.training import train

    settings = TrainSection(max_steps=2, batch_size=4, micro_batch_size=2, precision=precision,
                            progress="none", warmup_steps=0)
    train(model, random_examples(8, seed=1), settings, learning_rate=1e-3, pad_token_id=0, echo=lambda _: None)
