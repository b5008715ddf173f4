"""Helpers shared by the adapter, placement and save/load tests (not a test module)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest
import torch

from lladapt import Layout, testing
from lladapt.adapters.build import build_adapter, build_placement
from lladapt.adapters.model import AdaptedModel, attach

#: one short batch of token ids, valid for every tiny model (vocabulary 128, ids 0-2 special).
IDS = torch.tensor([[5, 17, 33, 60, 9, 101, 42, 7], [88, 3, 64, 12, 99, 25, 71, 6]])


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and much faster than on two when the machine's
    cores are shared (spinning OpenMP workers). Import this fixture into a test module to use it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def layout_of(model: torch.nn.Module) -> Layout:
    """The layout the registered backbone gives ``model``."""
    from lladapt.config import ModelSection
    from lladapt.models.loading import resolve_backbone

    section = ModelSection(source=model.config.model_type)
    return resolve_backbone(section, model.config).layout(model.config)


def tiny_adapted(
    family: str, adapter: dict[str, Any], placement: dict[str, Any] | str | None = None, seed: int = 0
) -> AdaptedModel:
    """A tiny model of ``family`` with ``adapter`` attached at ``placement``."""
    model = testing.tiny_model(family, seed=seed)
    if isinstance(placement, str):
        placement = {"name": placement}
    return attach(
        model,
        layout_of(model),
        build_adapter(adapter),
        build_placement(placement) if placement is not None else None,
    )


def randomise(adapted: AdaptedModel, seed: int = 1, std: float = 0.05) -> None:
    """Give every adapter tensor random values (zero-initialised ones too), so that a test sees
    the adapter's effect."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in adapted.trainable_parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * std + (1.0 if param.numel() == 1 else 0.0))


def logits(model: torch.nn.Module, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


@cache
def base_logits(family: str) -> torch.Tensor:
    """Logits of the unadapted tiny model of ``family`` (seed 0) on :data:`IDS`."""
    return logits(testing.tiny_model(family))
