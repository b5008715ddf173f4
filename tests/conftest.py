from __future__ import annotations

import pytest
from assets import shared_asset


@pytest.fixture(autouse=True)
def _fresh_plugins(monkeypatch):
    """Each test sees registries built from the current environment (plugins, env vars)."""
    from lladapt import plugin_manager

    plugin_manager.reset()
    yield
    plugin_manager.reset()


@pytest.fixture
def stories260k():
    return shared_asset("models", "stories260k", "config.json").parent


@pytest.fixture
def paper_data():
    return shared_asset("data", "llm-adapters")


def pytest_collection_modifyitems(config, items):
    """Skip GPU tests cleanly when no CUDA device is present."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
