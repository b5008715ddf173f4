"""The tokenizer of a model: loading it, the fixes a model needs (a pad token, the pad id in the
model's configs), and the padding side per purpose."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from lladapt.common.errors import ModelLoadError
from lladapt.models.source import load_pretrained, resolve_source

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from lladapt.components.interfaces import Backbone
    from lladapt.config import ModelSection

__all__ = ["PADDING_SIDES", "load_tokenizer", "padding_for", "sync_pad_token"]

#: tokenizer padding side per purpose: decoder-only generation needs the prompt flush against the
#: new tokens (left); training pads after the labels (right), the way the paper's code did.
PADDING_SIDES: dict[str, str] = {"generate": "left", "train": "right"}


def load_tokenizer(section: ModelSection, backbone: Backbone) -> PreTrainedTokenizerBase:
    """The tokenizer of ``model.tokenizer`` (else of ``model.source``), fixed by the backbone
    (a pad token when missing). Padding side: see :func:`padding_for`."""
    from transformers import AutoTokenizer

    source = resolve_source(section.tokenizer or section.source)
    if source.kind == "preset":
        raise ModelLoadError(
            f"preset '{source.location}' has no tokenizer; set model.tokenizer to a folder or hub id"
        )
    return backbone.prepare_tokenizer(load_pretrained(AutoTokenizer, source, section))


def sync_pad_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Give the model the tokenizer's pad id where it has none, so that ``generate`` neither warns
    nor guesses."""
    pad = tokenizer.pad_token_id
    if pad is None:
        return
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = pad
    generation = getattr(model, "generation_config", None)
    if generation is not None and generation.pad_token_id is None:
        generation.pad_token_id = pad


@contextlib.contextmanager
def padding_for(
    tokenizer: PreTrainedTokenizerBase, purpose: Literal["generate", "train"]
) -> Iterator[PreTrainedTokenizerBase]:
    """Pad on the left for generation, on the right for training; restored on exit.

    Batched generation with right padding puts pad tokens between the prompt and the new tokens
    and gives garbage (LLM-Adapters issue #61); training pads after the labels.
    """
    if purpose not in PADDING_SIDES:
        raise ValueError(f"purpose must be one of {sorted(PADDING_SIDES)}, got {purpose!r}")
    previous = tokenizer.padding_side
    tokenizer.padding_side = PADDING_SIDES[purpose]
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = previous
