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
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import PositiveInt, model_validator

from lladapt import AdapterError, Layout, Site
from lladapt.common import hf_compat
from lladapt.plugins.adapters.prompt_learning import (
    PromptLearningAdapter,
    PromptLearningConfig,
    embeddings_path,
)

if TYPE_CHECKING:
    import torch

    from lladapt.plugins.adapters.prompt_encoders import PrefixEncoder

__all__ = ["Prefix"]

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
        from lladapt.plugins.adapters.prompt_encoders import PrefixEncoder

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
