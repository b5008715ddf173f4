"""The causal-LM loss as a sum over label tokens, so the loop can normalise by the label tokens
of the whole accumulated batch (transformers' ``num_items_in_batch``) or per micro-batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lladapt.tokenization import IGNORE_INDEX, Encoded

if TYPE_CHECKING:  # pragma: no cover
    import torch


def label_tokens(example: Encoded) -> int:
    """Tokens of ``example`` that carry a loss (labels shift by one: the first never does)."""
    return sum(1 for label in example.labels[1:] if label != IGNORE_INDEX)


def summed_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of next-token cross-entropies over the label tokens. Adapters that prepend virtual
    tokens (prompt tuning) return longer logits: the last ``labels`` positions are the text's."""
    import torch.nn.functional as F

    logits = logits[:, -labels.shape[1]:, :]
    shifted = logits[:, :-1, :].float()
    return F.cross_entropy(
        shifted.reshape(-1, shifted.shape[-1]), labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )


def scale(n_label_tokens: int, step_tokens: int, step_micro_batches: int, normalization: str) -> float:
    """The factor that turns one micro-batch's summed loss into its share of the step's loss."""
    if normalization == "tokens":
        return 1.0 / max(1, step_tokens)
    return 1.0 / max(1, n_label_tokens) / step_micro_batches  # the paper code's mean of means


def total_label_tokens(examples: Sequence[Encoded]) -> int:
    return sum(label_tokens(e) for e in examples)
