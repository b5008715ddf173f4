"""Prompt tuning: trainable input embeddings ("soft prompt") prepended to every sequence.

Lester, Al-Rfou & Constant, "The Power of Scale for Parameter-Efficient Prompt Tuning",
EMNLP 2021 (arXiv 2104.08691). Only ``num_virtual_tokens x embedding_dim`` numbers train; the
paper found initialising them from real token embeddings (vocabulary samples or the embeddings of
a task description) better than random, so all three are offered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import model_validator

from lladapt import AdapterError, Layout
from lladapt.plugins.adapters.prompt_learning import (
    PromptLearningAdapter,
    PromptLearningConfig,
    embeddings_path,
)

if TYPE_CHECKING:
    import torch

    from lladapt.plugins.adapters.prompt_encoders import PromptEmbedding

__all__ = ["PromptTuning"]


def _repeat_to(ids: list[int], count: int) -> list[int]:
    """``ids`` cut or cycled to exactly ``count`` entries (PEFT's rule for text init)."""
    return (ids * math.ceil(count / len(ids)))[:count]


class PromptTuning(PromptLearningAdapter):
    """Prompt tuning (Lester et al. 2021): a trainable soft prompt prepended to the input.

    Initialised at random, from random vocabulary embeddings, or from the embeddings of
    ``init_text`` (which needs the model's tokenizer).
    """

    name: ClassVar[str] = "prompt"
    aliases: ClassVar[tuple[str, ...]] = ("prompt_tuning", "prompt-tuning")
    site_kind: ClassVar = "model"
    default_placement: ClassVar[Mapping[str, Any]] = {"name": "embeddings"}
    peft_type: ClassVar[str] = "PROMPT_TUNING"

    class Config(PromptLearningConfig):
        #: ``random``: N(0, 1); ``vocab``: embeddings of random vocabulary tokens; ``text``: the
        #: embeddings of ``init_text``'s tokens, cut or cycled to ``num_virtual_tokens``.
        #: Default: ``text`` when ``init_text`` is set, else ``random``.
        init: Literal["random", "vocab", "text"] | None = None
        #: a task description whose token embeddings start the prompt, e.g. "Solve the math problem".
        init_text: str | None = None
        #: tokenizer for ``init_text`` (a hub id or folder); default: the one lladapt loaded with
        #: the model, else the model's own ``name_or_path``.
        tokenizer: str | None = None

        @model_validator(mode="after")
        def _text_fields(self) -> PromptTuning.Config:
            if self.init == "text" and not self.init_text:
                raise ValueError("init: text needs init_text")
            if self.init_text is not None and self.init not in (None, "text"):
                raise ValueError(f"init_text is only used with init: text (got init: {self.init})")
            if self.tokenizer is not None and self.init_text is None:
                raise ValueError("tokenizer is only used with init_text")
            return self

        @property
        def init_method(self) -> str:
            return self.init or ("text" if self.init_text else "random")

    def __init__(self, config: PromptLearningConfig | None = None):
        super().__init__(config)
        #: the tokenizer for ``init_text``; lladapt sets it before attaching when it has one.
        self.tokenizer: Any = None

    def build(self, model: torch.nn.Module, layout: Layout) -> PromptEmbedding:
        import torch

        from lladapt.plugins.adapters.prompt_encoders import PromptEmbedding

        path = embeddings_path(model, layout)
        table = model.get_submodule(path).weight
        tokens = PromptEmbedding(
            self.config.num_virtual_tokens, table.shape[1], embeddings_path=path,
            device=table.device, dtype=table.dtype,
        )
        method = self.config.init_method
        if method != "random" and table.device.type != "meta":  # meta: shapes only, no values
            ids = self._init_token_ids(model, table.shape[0])
            with torch.no_grad():
                tokens.embedding.weight.copy_(table[torch.tensor(ids, device=table.device)])
        return tokens

    def _init_token_ids(self, model: torch.nn.Module, vocab_size: int) -> list[int]:
        import torch

        count = self.config.num_virtual_tokens
        if self.config.init_method == "vocab":
            return torch.randint(0, vocab_size, (count,)).tolist()
        tokenizer = self._load_tokenizer(model)
        ids = list(tokenizer(self.config.init_text, add_special_tokens=False)["input_ids"])
        if not ids:
            raise AdapterError(f"init_text {self.config.init_text!r} tokenizes to no tokens")
        if max(ids) >= vocab_size:
            raise AdapterError(
                f"the tokenizer gives token id {max(ids)} for init_text, beyond the model's "
                f"{vocab_size} embeddings: it is not this model's tokenizer"
            )
        return _repeat_to(ids, count)

    def _load_tokenizer(self, model: torch.nn.Module) -> Any:
        if self.tokenizer is not None and self.config.tokenizer is None:
            return self.tokenizer
        source = self.config.tokenizer or getattr(model, "name_or_path", "")
        if not source:
            raise AdapterError(
                "init_text needs a tokenizer: set adapter.tokenizer to a tokenizer folder or hub "
                "id (the model has no name_or_path to find its own)"
            )
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise AdapterError(f"cannot load the tokenizer '{source}' for init_text: {exc}") from None

    def _peft_fields(self, model: torch.nn.Module, layout: Layout) -> dict[str, Any]:
        table = model.get_submodule(embeddings_path(model, layout)).weight
        # the prompt is already trained: PEFT must not re-initialise it from text
        return {"token_dim": table.shape[1], "prompt_tuning_init": "RANDOM"}
