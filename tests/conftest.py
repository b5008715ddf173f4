from __future__ import annotations

import pytest

from lladapt import testing


@pytest.fixture(autouse=True)
def _fresh_plugins(monkeypatch):
    """Each test sees registries built from the current environment (plugins, env vars)."""
    from lladapt import plugin_manager

    plugin_manager.reset()
    yield
    plugin_manager.reset()


@pytest.fixture
def stories260k():
    path = testing.stories260k_dir()
    if path is None:
        pytest.skip("../shared/models/stories260k is absent (set LLADAPT_SHARED_DIR)")
    return path


@pytest.fixture
def paper_data():
    path = testing.paper_data_dir()
    if path is None:
        pytest.skip("../shared/data/llm-adapters is absent (set LLADAPT_SHARED_DIR)")
    return path


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
