"""The trainable torch modules of the prefix, prompt and P-tuning adapters (their parameter names
and layouts are PEFT's). The adapters (:mod:`.prefix`, :mod:`.prompt`, :mod:`.ptuning`) build
them when attached; importing those never imports torch.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from lladapt import AdapterError
from lladapt.common import hf_compat
from lladapt.plugins.adapters.virtual_tokens import (
    PrependedEmbeddings,
    VirtualTokens,
    cached_length,
)

__all__ = ["PrefixEncoder", "PromptEmbedding", "PromptEncoder"]


#: set on a cache this adapter made for a call with ``use_cache=False``. The model returns the
#: cache it was given even then, and ``generate(use_cache=False)`` passes it back on the next
#: step with the whole sequence again; the mark tells the hook to start from a fresh prefix.
UNCACHED_MARK = "_lladapt_uncached_prefix"


def _wants_cache(model: torch.nn.Module, call: dict[str, Any]) -> bool:
    """Whether this call asked for a cache (``use_cache``, else the model config's default)."""
    use_cache = call.get("use_cache")
    if use_cache is None:
        use_cache = getattr(getattr(model, "config", None), "use_cache", True)
    return bool(use_cache)


class PrefixEncoder(VirtualTokens):
    """The trainable prefixes: ``embedding`` holds them flat, ``[tokens, layers*2*kv_dim]``, or,
    with a reparameterisation MLP (``transform``), holds ``[tokens, kv_dim]`` inputs of
    ``Linear(kv_dim, hidden) -> tanh -> Linear(hidden, layers*2*kv_dim)`` (Li & Liang's
    reparameterisation, which they found stabilises training). Parameter names and layout are
    PEFT's ``PrefixEncoder``'s, so the flat tensor is PEFT's ``prompt_embeddings``.
    """

    def __init__(
        self,
        num_virtual_tokens: int,
        num_layers: int,
        num_key_value_heads: int,
        head_dim: int,
        *,
        projection_hidden_size: int | None = None,
        zero_init: bool = False,
        embeddings_path: str,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(num_virtual_tokens, embeddings_path)
        self.num_layers = num_layers
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        kv_dim = num_key_value_heads * head_dim
        flat = num_layers * 2 * kv_dim
        factory = {"device": device, "dtype": dtype}
        self.transform: torch.nn.Sequential | None
        if projection_hidden_size is None:
            self.embedding = torch.nn.Embedding(num_virtual_tokens, flat, **factory)
            self.transform = None
            if zero_init:
                torch.nn.init.zeros_(self.embedding.weight)
        else:
            self.embedding = torch.nn.Embedding(num_virtual_tokens, kv_dim, **factory)
            self.transform = torch.nn.Sequential(
                torch.nn.Linear(kv_dim, projection_hidden_size, **factory),
                torch.nn.Tanh(),
                torch.nn.Linear(projection_hidden_size, flat, **factory),
            )
            if zero_init:
                torch.nn.init.zeros_(self.transform[-1].weight)
                torch.nn.init.zeros_(self.transform[-1].bias)

    def flat_prefixes(self) -> torch.Tensor:
        """``[tokens, layers*2*kv_dim]``: per token, per layer, key then value, heads x head_dim."""
        weight = self.embedding.weight
        return weight if self.transform is None else self.transform(weight)

    def key_values(self, batch_size: int, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the (key, value) prefixes as the cache stores them:
        ``[batch, kv_heads, tokens, head_dim]`` each."""
        tokens = self.num_virtual_tokens
        flat = self.flat_prefixes().to(dtype)
        # PEFT's view: [tokens, layers*2, heads, head_dim] -> [layers*2, heads, tokens, head_dim]
        kv = flat.view(tokens, self.num_layers * 2, self.num_key_value_heads, self.head_dim)
        kv = kv.permute(1, 2, 0, 3).unsqueeze(1)
        kv = kv.expand(-1, batch_size, -1, -1, -1).contiguous()
        return [(kv[2 * i], kv[2 * i + 1]) for i in range(self.num_layers)]

    def forward(self) -> torch.Tensor:
        return self.flat_prefixes()

    def _fill_cache(self, model: torch.nn.Module, cache: Any, batch_size: int) -> Any:
        """A cache holding the prefixes: the caller's empty cache filled in place (``generate``
        passes one and keeps it), else a new ``DynamicCache``."""
        dtype = model.get_submodule(self.embeddings_path).weight.dtype
        pairs = self.key_values(batch_size, dtype)
        if cache is None:
            return hf_compat.dynamic_cache(pairs, getattr(model, "config", None))
        for index, (key, value) in enumerate(pairs):
            cache.update(key, value, index)
        return cache

    def rewrite(self, model: torch.nn.Module, call: dict[str, Any]) -> dict[str, Any]:
        tokens = call.get("input_ids")
        if tokens is None:
            tokens = call.get("inputs_embeds")
        if tokens is None:
            return call  # the model reports the missing input itself
        if model.training and hf_compat.activation_checkpointing(model):
            raise AdapterError(
                "prefix tuning cannot train with gradient checkpointing: transformers drops the "
                "KV cache, which holds the prefixes, inside checkpointed layers (the prefixes "
                "would silently do nothing). Set train.gradient_checkpointing to false"
            )
        batch_size, length = tokens.shape[0], tokens.shape[1]
        cache = self.take_cache(call)
        if getattr(cache, UNCACHED_MARK, False):
            cache = None  # our cache of an earlier uncached call, handed back by generate()
        past = cached_length(cache)
        if past == 0:
            cache = self._fill_cache(model, cache, batch_size)
            if not _wants_cache(model, call):
                setattr(cache, UNCACHED_MARK, True)
            past = self.num_virtual_tokens
        elif past < self.num_virtual_tokens:
            raise AdapterError(
                f"past_key_values holds {past} tokens, fewer than the {self.num_virtual_tokens} "
                "prefix tokens: it was not built by this prefix adapter"
            )
        self.put_cache(call, cache)
        return self.align(call, past + length, length, prepended=False)


class PromptEmbedding(PrependedEmbeddings):
    """The soft prompt itself: ``embedding.weight`` is ``[tokens, embedding_dim]`` (PEFT's
    ``PromptEmbedding`` layout, so it is PEFT's ``prompt_embeddings`` as is)."""

    def __init__(self, num_virtual_tokens: int, embedding_dim: int, *, embeddings_path: str,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__(num_virtual_tokens, embeddings_path)
        self.embedding = torch.nn.Embedding(num_virtual_tokens, embedding_dim, device=device, dtype=dtype)

    def prompts(self) -> torch.Tensor:
        return self.embedding.weight


class PromptEncoder(PrependedEmbeddings):
    """``embedding`` (``[tokens, dim]``) fed through ``mlp_head`` (MLP: dim -> h -> h -> dim, ReLU)
    or through ``lstm_head`` (bidirectional, hidden h) then ``mlp_head`` (2h -> 2h -> dim)."""

    def __init__(
        self,
        num_virtual_tokens: int,
        embedding_dim: int,
        *,
        encoder: Literal["mlp", "lstm"],
        hidden_size: int,
        lstm_layers: int,
        dropout: float,
        embeddings_path: str,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(num_virtual_tokens, embeddings_path)
        factory = {"device": device, "dtype": dtype}
        self.encoder = encoder
        self.embedding = torch.nn.Embedding(num_virtual_tokens, embedding_dim, **factory)
        self.lstm_head: torch.nn.LSTM | None = None
        if encoder == "lstm":
            self.lstm_head = torch.nn.LSTM(
                input_size=embedding_dim, hidden_size=hidden_size, num_layers=lstm_layers,
                dropout=dropout, bidirectional=True, batch_first=True, **factory,
            )
            self.mlp_head = torch.nn.Sequential(
                torch.nn.Linear(2 * hidden_size, 2 * hidden_size, **factory),
                torch.nn.ReLU(),
                torch.nn.Linear(2 * hidden_size, embedding_dim, **factory),
            )
        else:
            self.mlp_head = torch.nn.Sequential(
                torch.nn.Linear(embedding_dim, hidden_size, **factory),
                torch.nn.ReLU(),
                torch.nn.Linear(hidden_size, hidden_size, **factory),
                torch.nn.ReLU(),
                torch.nn.Linear(hidden_size, embedding_dim, **factory),
            )

    def prompts(self) -> torch.Tensor:
        inputs = self.embedding.weight
        if self.lstm_head is not None:
            inputs = self.lstm_head(inputs.unsqueeze(0))[0].squeeze(0)
        return self.mlp_head(inputs)
