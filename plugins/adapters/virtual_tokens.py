"""The torch side of the prompt-learning adapters: the :class:`VirtualTokens` module and the
forward pre-hook that rewrites each call of the model.

These adapters change no module of the base model. They condition it through *virtual tokens*:
trainable key/value prefixes in every layer's attention cache (prefix tuning) or trainable input
embeddings prepended to the sequence (prompt tuning, P-tuning). The trainable tensors live in one
:class:`VirtualTokens` module registered on the model as :data:`MODULE_NAME` (so ``.to()``,
``.train()``, ``parameters()`` and ``state_dict()`` see it), and a forward pre-hook on the model
rewrites each call. The user keeps calling ``model(input_ids, attention_mask=..., labels=...)``
and ``model.generate(...)`` as usual; the hook

* widens a 2-D ``attention_mask`` by the virtual tokens (all visible),
* pads ``labels`` with -100 where embeddings are prepended (no loss on virtual tokens),
* moves explicit ``position_ids`` (``generate`` counts them from the attention mask) up by the
  number of virtual tokens, and without them derives them from the widened mask, so a plain
  forward, ``generate`` and a left-padded batch all place the real tokens alike,
* injects the prompt only when the cache is empty (the first forward of a generation, or any
  uncached forward); later decoding steps find it in the cache already.

For unpadded input this is numerically PEFT's ``PeftModelForCausalLM.forward`` and
``prepare_inputs_for_generation`` (PEFT 0.21; tested to 1e-5 and token for token); with left
padding lladapt keeps position ids that PEFT drops for prompt tuning. A fixed-size (static)
cache is refused: it is sized without the virtual tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lladapt import AdapterError
from lladapt.common import hf_compat
from lladapt.plugins.adapters.prompt_names import MODULE_NAME

__all__ = [
    "PrependedEmbeddings",
    "VirtualTokens",
    "attached_virtual_tokens",
    "cached_length",
    "detach_virtual_tokens",
    "install_virtual_tokens",
    "widen_mask",
]


def cached_length(cache: Any) -> int:
    """Tokens already in a KV cache (0 for None or an empty cache)."""
    if cache is None:
        return 0
    if not hf_compat.is_cache(cache):
        raise AdapterError(
            f"prompt-learning adapters need a transformers Cache object as past_key_values, not "
            f"{type(cache).__name__} (transformers 5 dropped tuple caches)"
        )
    if hf_compat.is_static_cache(cache):
        raise AdapterError(
            f"prompt-learning adapters need a cache that grows ({type(cache).__name__} has a "
            "fixed size, chosen without the virtual tokens): use the default dynamic cache, not "
            "generate(cache_implementation='static')"
        )
    return hf_compat.cache_length(cache)


def widen_mask(mask: Any, num_virtual: int, total: int) -> Any:
    """Prepend ``num_virtual`` visible columns to a 2-D attention mask that lacks them.

    ``total`` is the number of key positions this forward attends to (cache + new tokens). A mask
    that already spans ``total`` columns is left alone (the caller included the virtual tokens);
    4-D masks are the caller's responsibility.
    """
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        return mask
    width = mask.shape[-1]
    if width == total:
        return mask
    if width != total - num_virtual:
        raise AdapterError(
            f"attention_mask has {width} columns; with {num_virtual} virtual tokens expected "
            f"{total - num_virtual} (without them) or {total} (with them)"
        )
    ones = torch.ones(mask.shape[0], num_virtual, dtype=mask.dtype, device=mask.device)
    return torch.cat((ones, mask), dim=1)


class VirtualTokens(torch.nn.Module):
    """The trainable part of a prompt-learning adapter, and the rewrite of the model's inputs.

    Subclasses hold the parameters and implement :meth:`rewrite` (prefix or prepended
    embeddings); calling the module gives the tensor PEFT saves as ``prompt_embeddings``.
    """

    #: whether the model's forward takes ``position_ids`` (set when the module is installed).
    takes_position_ids: bool = False
    #: the name the model's forward takes its KV cache by (set when the module is installed;
    #: see :func:`lladapt.common.hf_compat.cache_argument`).
    cache_argument: str | None = None

    def __init__(self, num_virtual_tokens: int, embeddings_path: str):
        super().__init__()
        self.num_virtual_tokens = num_virtual_tokens
        #: module path of the model's token embeddings (prompt tuning embeds with them; their
        #: dtype is the dtype the virtual tokens are cast to).
        self.embeddings_path = embeddings_path

    def rewrite(self, model: torch.nn.Module, call: dict[str, Any]) -> dict[str, Any]:
        """Return the keyword arguments of one forward of ``model`` with the prompt applied."""
        raise NotImplementedError

    def forward(self) -> torch.Tensor:
        """The virtual tokens as PEFT saves them (``prompt_embeddings``: the encoder's output for
        every token)."""
        raise NotImplementedError

    def take_cache(self, call: dict[str, Any]) -> Any:
        """Remove the KV cache from ``call`` (under either of transformers' names) and return it."""
        return hf_compat.take_cache(call)

    def put_cache(self, call: dict[str, Any], cache: Any) -> None:
        """Hand ``cache`` to the model under the name its forward takes."""
        if cache is not None and self.cache_argument is not None:
            call[self.cache_argument] = cache

    def align(self, call: dict[str, Any], total: int, length: int, prepended: bool) -> dict[str, Any]:
        """Fit the attention mask and position ids of ``call`` to the virtual tokens.

        ``total``: key positions this forward attends to (cache + its own tokens, virtual ones
        included); ``length``: the positions it computes; ``prepended``: the virtual tokens were
        just prepended to its input embeddings.

        Explicit position ids count real tokens (``generate`` derives them from the attention
        mask), so they move up by the number of virtual tokens. Without them and with a 2-D mask
        they are derived from the widened mask the way ``generate`` does it, so that a left-padded
        plain forward places tokens exactly as ``generate`` (the model's own fallback counts pad
        tokens, which prefix keys, having no position of their own, would notice).
        """
        count = self.num_virtual_tokens
        mask = widen_mask(call.get("attention_mask"), count, total)
        call["attention_mask"] = mask
        positions = call.get("position_ids")
        if positions is not None:
            positions = positions + count
            if prepended:
                lead = torch.arange(count, dtype=positions.dtype, device=positions.device)
                positions = torch.cat((lead.expand(*positions.shape[:-1], count), positions), dim=-1)
            call["position_ids"] = positions
        elif self.takes_position_ids and isinstance(mask, torch.Tensor) and mask.dim() == 2:
            derived = mask.long().cumsum(-1) - 1
            call["position_ids"] = derived.masked_fill(mask == 0, 0)[:, -length:]
        return call


def _bind_arguments(parameters: Mapping[str, Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    """Keyword arguments of a forward call, positional ones named by the forward's signature."""
    if not args:
        return dict(kwargs)
    names = [
        p.name
        for p in parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(args) > len(names):
        raise AdapterError(f"forward got {len(args)} positional arguments; at most {len(names)} fit")
    call = dict(zip(names, args, strict=False))
    call.update(kwargs)
    return call


def install_virtual_tokens(model: torch.nn.Module, tokens: VirtualTokens) -> None:
    """Register ``tokens`` on ``model`` and hook the model's forward to rewrite each call."""
    if isinstance(getattr(model, MODULE_NAME, None), VirtualTokens):
        raise AdapterError(
            f"the model already has a prompt-learning adapter "
            f"({type(getattr(model, MODULE_NAME)).__name__}); one per model"
        )
    parameters = hf_compat.forward_parameters(model)

    def pre_hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        encoder = getattr(module, MODULE_NAME)
        return (), encoder.rewrite(module, _bind_arguments(parameters, args, kwargs))

    tokens.takes_position_ids = "position_ids" in parameters
    tokens.cache_argument = hf_compat.cache_argument(model)
    model.add_module(MODULE_NAME, tokens)
    tokens._hook_handle = model.register_forward_pre_hook(pre_hook, with_kwargs=True)


def attached_virtual_tokens(model: torch.nn.Module) -> VirtualTokens | None:
    """The prompt-learning module attached to ``model``, if any."""
    module = getattr(model, MODULE_NAME, None)
    return module if isinstance(module, VirtualTokens) else None


def detach_virtual_tokens(model: torch.nn.Module) -> VirtualTokens:
    """Remove the prompt-learning module and its hook; the model behaves as before attaching."""
    tokens = attached_virtual_tokens(model)
    if tokens is None:
        raise AdapterError("the model has no prompt-learning adapter to detach")
    tokens._hook_handle.remove()
    delattr(model, MODULE_NAME)
    return tokens


class PrependedEmbeddings(VirtualTokens):
    """Virtual tokens that are input embeddings, prepended to the sequence (prompt tuning,
    P-tuning). Subclasses implement :meth:`prompts`."""

    def prompts(self) -> torch.Tensor:
        """The virtual tokens' input embeddings, ``[tokens, embedding_dim]``."""
        raise NotImplementedError

    def forward(self) -> torch.Tensor:
        return self.prompts()

    def rewrite(self, model: torch.nn.Module, call: dict[str, Any]) -> dict[str, Any]:
        count = self.num_virtual_tokens
        ids, embeds = call.get("input_ids"), call.get("inputs_embeds")
        if ids is None and embeds is None:
            return call  # the model reports the missing input itself
        length = (ids if ids is not None else embeds).shape[1]
        cache = self.take_cache(call)
        self.put_cache(call, cache)
        past = cached_length(cache)
        prefill = past == 0
        if prefill:
            if embeds is None:
                embeds = model.get_submodule(self.embeddings_path)(ids)
            batch_size = embeds.shape[0]
            prompts = self.prompts().to(embeds.dtype).unsqueeze(0).expand(batch_size, -1, -1)
            call["input_ids"] = None
            call["inputs_embeds"] = torch.cat((prompts, embeds), dim=1)
            labels = call.get("labels")
            if labels is not None:
                ignored = torch.full((labels.shape[0], count), -100, dtype=labels.dtype, device=labels.device)
                call["labels"] = torch.cat((ignored, labels), dim=1)
            total = count + length
        else:
            if past < count:
                raise AdapterError(
                    f"past_key_values holds {past} tokens, fewer than the {count} virtual tokens: "
                    "it was not built with this prompt adapter"
                )
            total = past + length
        return self.align(call, total, count + length if prefill else length, prefill)
