"""Prefix tuning: trainable key/value prefixes in every decoder layer's attention.

Li & Liang, "Prefix-Tuning: Optimizing Continuous Prompts for Generation", ACL 2021
(arXiv 2101.00190). Each layer attends to ``num_virtual_tokens`` extra key/value pairs that are
trained while the model stays frozen. The LLM-Adapters paper's prefix runs use 10 virtual tokens,
no reparameterisation and learning rate 3e-2 (its code is PEFT 0.3's prefix tuning).

The prefixes are written into the transformers KV cache (``DynamicCache``) before the first
forward, exactly as PEFT does, so attention, ALiBi (BLOOM), rotary (LLaMA, GPT-J) and learned
positions (OPT) all see them as ``num_virtual_tokens`` earlier tokens. They are sized by the
number of KEY/VALUE heads: on grouped-query models (LLaMA-2-70B, stories260k) the cache holds
``num_key_value_heads`` heads, not ``num_attention_heads``.

Two limits follow from living in the cache: every layer gets a prefix (transformers builds one
attention mask for all layers, so a layer without one could not mask the prefix positions out),
and training cannot use gradient checkpointing (checkpointed layers are handed no cache).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import PositiveInt, model_validator

from lladapt import AdapterError, Layout, Site, hf_compat
from lladapt.plugins.adapters.prompt_learning import (
    PromptLearningAdapter,
    PromptLearningConfig,
    VirtualTokens,
    cached_length,
    embeddings_path,
)

__all__ = ["Prefix", "PrefixEncoder"]

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


class Prefix(PromptLearningAdapter):
    """Prefix tuning (Li & Liang 2021): trainable key/value prefixes in every layer.

    Sized by the key/value heads (grouped-query attention) and head size of the backbone's layout.
    """

    name: ClassVar[str] = "prefix"
    aliases: ClassVar[tuple[str, ...]] = ("prefix_tuning", "prefix-tuning")
    site_kind: ClassVar = "layer"
    default_placement: ClassVar[Mapping[str, Any]] = {"name": "all_layers"}
    peft_type: ClassVar[str] = "PREFIX_TUNING"
    needs_arguments: ClassVar[tuple[str, ...]] = (hf_compat.CACHE, "attention_mask")
    needs_reason: ClassVar[str] = (
        "the prefixes are handed to the attention layers as a transformers KV cache"
    )

    class Config(PromptLearningConfig):
        #: reparameterise the prefixes through a two-layer tanh MLP (Li & Liang section 4.3).
        prefix_projection: bool = False
        #: hidden width of that MLP (default: the key/value width, kv_heads * head_dim, as PEFT).
        encoder_hidden_size: PositiveInt | None = None
        #: ``random``: N(0, 1) as PEFT's ``nn.Embedding`` (the paper's code); ``zero``: prefixes
        #: start at zero (with the MLP: its output layer does).
        init: Literal["random", "zero"] = "random"

        @model_validator(mode="after")
        def _hidden_needs_projection(self) -> Prefix.Config:
            if self.encoder_hidden_size is not None and not self.prefix_projection:
                raise ValueError("encoder_hidden_size is only used with prefix_projection: true")
            return self

    def check_sites(self, layout: Layout, sites: Sequence[Site]) -> None:
        super().check_sites(layout, sites)
        chosen = sorted({s.layer for s in sites if s.layer is not None})
        if chosen != list(range(layout.num_layers)):
            shown = ", ".join(map(str, chosen)) or "none"
            raise AdapterError(
                f"prefix tuning needs every decoder layer (0-{layout.num_layers - 1}); the "
                f"placement selected layers {shown}. A prefix lives in the KV cache, and "
                "transformers applies one attention mask to all layers, so layers without a "
                "prefix cannot be masked apart. Use the default placement (all layers)"
            )

    def build(self, model: torch.nn.Module, layout: Layout) -> PrefixEncoder:
        cfg = self.config
        path = embeddings_path(model, layout)
        weight = model.get_submodule(path).weight
        kv_dim = layout.num_key_value_heads * layout.head_dim
        hidden = (cfg.encoder_hidden_size or kv_dim) if cfg.prefix_projection else None
        return PrefixEncoder(
            cfg.num_virtual_tokens,
            layout.num_layers,
            layout.num_key_value_heads,
            layout.head_dim,
            projection_hidden_size=hidden,
            zero_init=cfg.init == "zero",
            embeddings_path=path,
            device=weight.device,
            dtype=weight.dtype,
        )

    def _peft_fields(self, model: torch.nn.Module, layout: Layout) -> dict[str, Any]:
        kv_dim = layout.num_key_value_heads * layout.head_dim
        return {
            # PEFT sizes grouped-query prefixes this way (_prepare_prompt_learning_config)
            "token_dim": kv_dim,
            "num_attention_heads": layout.num_key_value_heads,
            "prefix_projection": self.config.prefix_projection,
            "encoder_hidden_size": self.config.encoder_hidden_size or kv_dim,
        }

    @classmethod
    def default_sites(cls, layout: Layout) -> list[Site]:
        return [
            Site(path=layout.layer_path(i), layer=i, kind="layer") for i in range(layout.num_layers)
        ]
