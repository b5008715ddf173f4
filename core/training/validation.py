"""Validation: the split (``data.val_set_size`` examples held out of training, chosen by the seed;
the paper's code: ``train_test_split(test_size=val_set_size, shuffle=True, seed=42)``) and the
loss the loop logs on it every ``train.eval_steps`` (the mean loss per label token, in eval mode
so that dropout does not blur it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

from lladapt.common.errors import ConfigError, ErrorItem
from lladapt.data.tokenization import Encoded, collate_for_training
from lladapt.training.loss import label_tokens, summed_loss

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from lladapt.training.precision import Precision

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


def validation_loss(model: torch.nn.Module, examples: Sequence[Encoded], precision: Precision, *,
                    micro_batch_size: int, pad_token_id: int, pad_to_multiple_of: int | None) -> float:
    """Mean loss per label token over ``examples``, batched in order of length (less padding);
    the model is left in training mode."""
    import torch

    model.eval()
    total = count = 0.0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    with torch.no_grad():
        for i in range(0, len(order), micro_batch_size):
            rows = [examples[j] for j in order[i : i + micro_batch_size]]
            batch = collate_for_training(rows, pad_token_id, pad_to_multiple_of)
            batch = {k: v.to(precision.device) for k, v in batch.items()}
            with precision.autocast():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            total += summed_loss(logits, batch["labels"]).item()
            count += sum(label_tokens(r) for r in rows)
    model.train()
    return total / max(1, count)
