"""The order of micro-batches: a seeded function of (seed, epoch), so a resumed run draws the
same batches as an uninterrupted one.

With ``group_by_length`` the examples are grouped by length the way transformers' Trainer does
(``get_length_grouped_indices``: random permutation, mega-batches of 50 micro-batches sorted by
length, the longest batch first so an out-of-memory error comes at once), then the micro-batches
after the first are shuffled, so the order stays random at the batch level while each batch holds
rows of similar length. The grouping is written out here rather than imported: importing
``transformers.trainer_pt_utils`` pulls in the whole Trainer stack (peft included), seconds of
start-up for ten lines."""

from __future__ import annotations

from collections.abc import Sequence


def epoch_batches(
    lengths: Sequence[int], micro_batch_size: int, *, seed: int, epoch: int, group_by_length: bool
) -> list[list[int]]:
    """The micro-batches (lists of example indices) of one epoch."""
    import torch

    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)  # the sampler's own RNG
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if group_by_length:
        order = _length_grouped(order, lengths, micro_batch_size)
    batches = [order[i : i + micro_batch_size] for i in range(0, len(order), micro_batch_size)]
    if group_by_length and len(batches) > 2:
        rest = torch.randperm(len(batches) - 1, generator=generator).tolist()
        batches = [batches[0]] + [batches[1 + i] for i in rest]
    return batches


def _length_grouped(order: list[int], lengths: Sequence[int], micro_batch_size: int) -> list[int]:
    """transformers' ``get_length_grouped_indices`` on an already permuted ``order``."""
    mult = max(1, min(len(order) // (micro_batch_size * 4), 50))
    size = mult * micro_batch_size
    megabatches = [sorted(order[i : i + size], key=lambda j: lengths[j], reverse=True)
                   for i in range(0, len(order), size)]
    longest = max(range(len(megabatches)), key=lambda m: lengths[megabatches[m][0]])
    megabatches[0][0], megabatches[longest][0] = megabatches[longest][0], megabatches[0][0]
    return [i for megabatch in megabatches for i in megabatch]


def padded_share(batches: Sequence[Sequence[int]], lengths: Sequence[int], multiple: int | None = None) -> float:
    """Share of padding tokens when each batch is padded to its longest row."""
    real = padded = 0
    for batch in batches:
        width = padded_width(max(lengths[i] for i in batch), multiple)
        real += sum(lengths[i] for i in batch)
        padded += width * len(batch)
    return 1 - real / padded if padded else 0.0


def padded_width(longest: int, multiple: int | None) -> int:
    if not multiple:
        return longest
    return -(-longest // multiple) * multiple
