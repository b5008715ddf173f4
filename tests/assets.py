"""The one rule for tests that need the shared assets (``../shared`` or ``LLADAPT_SHARED_DIR``):
skip only when there is no shared folder at all; when there is one but it lacks the file, fail
with the missing path (a broken copy must not pass as a skipped test). Not a test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from lladapt import testing

ABSENT = "no shared assets: ../shared beside the checkout is absent (or set LLADAPT_SHARED_DIR)"


def shared_asset(*parts: str) -> Path:
    """The path of ``parts`` in the shared assets; skips or fails the calling test as above."""
    try:
        path = testing.shared_asset(*parts)
    except FileNotFoundError as error:
        pytest.fail(str(error), pytrace=False)
    if path is None:
        pytest.skip(ABSENT)
    return path


def load_stories260k(folder: Path):
    """stories260k loaded as lladapt loads any model (fp32, eval mode), so a test's base gets the
    same load arguments as a user's (``loading.MODEL_LOAD_KWARGS``): a ``LoadedModel``."""
    from lladapt.config import ModelSection
    from lladapt.models.loading import load_model

    loaded = load_model(ModelSection(source=str(folder), dtype="float32"))
    loaded.model.eval()
    return loaded
