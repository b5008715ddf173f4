"""The validation split: ``data.val_set_size`` examples held out of training, chosen by the seed
(the paper's code: ``train_test_split(test_size=val_set_size, shuffle=True, seed=42)``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from lladapt.common.errors import ConfigError, ErrorItem

T = TypeVar("T")


def split_validation(examples: Sequence[T], size: int, seed: int) -> tuple[list[T], list[T]]:
    """(train, validation): ``size`` examples drawn with ``seed``; the rest keep their order."""
    if not size:
        return list(examples), []
    if size >= len(examples):
        raise ConfigError([ErrorItem(
            "data.val_set_size",
            f"{size} leaves nothing to train on: the training data has {len(examples)} examples",
        )])
    import random

    held = set(random.Random(seed).sample(range(len(examples)), size))
    return ([ex for i, ex in enumerate(examples) if i not in held],
            [ex for i, ex in enumerate(examples) if i in held])
