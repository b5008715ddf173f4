from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from assets import shared_asset


@pytest.fixture(autouse=True)
def _fresh_plugins(monkeypatch):
    """Each test sees registries built from the current environment (plugins, env vars)."""
    from lladapt.components import plugin_manager

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



@pytest.fixture
def logits_when_saved(monkeypatch):
    """Records, as each adapted model saves itself, its logits (in eval mode) on ``.ids`` under
    the folder's name in ``.by_folder``: the model as it was when training ended, to compare a
    reloaded folder with."""
    import torch

    from lladapt.adapters.model import AdaptedModel

    # token ids valid in every test model (stories260k's vocabulary is 512)
    record = SimpleNamespace(ids=torch.tensor([[1, 20, 30, 40]]), by_folder={})
    save = AdaptedModel.save_adapter

    def recording_save(self, path, *args, **kwargs):
        training = self.training
        self.eval()
        with torch.no_grad():
            record.by_folder[Path(path).name] = self(input_ids=record.ids).logits
        self.train(training)
        return save(self, path, *args, **kwargs)

    monkeypatch.setattr(AdaptedModel, "save_adapter", recording_save)
    return record
