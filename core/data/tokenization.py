"""Examples -> token ids for training, as the paper's code does it: the prompt template renders
the full text, which is cut at ``cutoff_len`` tokens, EOS is appended when there is room, and the
prompt part is masked out of the loss unless ``train_on_inputs``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lladapt.components.interfaces import Example, PromptTemplate

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]


def encode_for_training(
    tokenizer: PreTrainedTokenizerBase,
    template: PromptTemplate,
    example: Example,
    *,
    cutoff_len: int,
    train_on_inputs: bool = True,
    add_eos: bool = True,
) -> Encoded:
    """Token ids and labels of one training example."""
    ids = tokenizer(template.train_prompt(example), truncation=True, max_length=cutoff_len)["input_ids"]
    eos = tokenizer.eos_token_id
    if add_eos and eos is not None and (not ids or ids[-1] != eos) and len(ids) < cutoff_len:
        ids = [*ids, eos]
    labels = list(ids)
    if not train_on_inputs:
        prefix = tokenizer(
            template.train_prefix(example), truncation=True, max_length=cutoff_len
        )["input_ids"]
        n = min(len(prefix), len(labels))
        labels[:n] = [IGNORE_INDEX] * n
    return Encoded(list(ids), labels)


def collate_for_training(
    batch: Sequence[Encoded], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest row (rounded up to ``pad_to_multiple_of``); padding is
    masked out of attention and loss."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, enc in enumerate(batch):
        n = len(enc.input_ids)
        input_ids[row, :n] = torch.tensor(enc.input_ids)
        labels[row, :n] = torch.tensor(enc.labels)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
