"""Shared machinery of the prompt-learning adapters: prefix tuning, prompt tuning and P-tuning.

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

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from pydantic import PositiveInt

from lladapt import Adapter, AdapterError, ComponentConfig, Layout, Site, hf_compat

__all__ = [
    "MODULE_NAME",
    "PEFT_KEY",
    "PromptLearningAdapter",
    "PromptLearningConfig",
    "PrependedEmbeddings",
    "VirtualTokens",
    "attached_virtual_tokens",
    "cached_length",
    "detach_virtual_tokens",
    "embeddings_path",
    "widen_mask",
]

#: attribute of the base model that holds the virtual-token module (one per model).
MODULE_NAME = "lladapt_virtual_tokens"


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
    #: see :func:`lladapt.hf_compat.cache_argument`).
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


def _install(model: torch.nn.Module, tokens: VirtualTokens) -> None:
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


class PromptLearningConfig(ComponentConfig):
    """Fields every prompt-learning adapter has."""

    #: number of virtual tokens (the paper's prefix-tuning runs: 10).
    num_virtual_tokens: PositiveInt = 10


#: the key PEFT saves a prompt-learning adapter's virtual tokens under.
PEFT_KEY = "prompt_embeddings"


class PromptLearningAdapter(Adapter):
    """Base of the adapters that train virtual tokens instead of inserting modules.

    Subclasses implement :meth:`build` (the :class:`VirtualTokens` module for a model) and may add
    PEFT ``adapter_config.json`` fields (:meth:`_peft_fields`).

    Saving (``lladapt.adapt`` contract): the state is the module's parameters, keyed
    ``lladapt_virtual_tokens.<name>``. :meth:`to_peft` adds PEFT's ``prompt_embeddings`` (the
    virtual tokens as the encoder outputs them) beside that state, so one folder loads both in
    ``peft.PeftModel.from_pretrained`` (which reads only ``prompt_embeddings``) and in lladapt
    (which reads the encoder's own parameters back, bit-identical).
    """

    site_kind: ClassVar = "model"
    modes: ClassVar[frozenset[str]] = frozenset()
    #: the learning rate of the prompt-learning recipes (LLM-Adapters' prefix runs, PEFT's
    #: prompt-based-methods guide): 3e-2.
    default_learning_rate: ClassVar[float] = 3e-2
    #: PEFT's ``peft_type`` for this adapter.
    peft_type: ClassVar[str] = ""
    size_option: ClassVar[str] = "num_virtual_tokens"
    #: forward arguments the model must take by name for this adapter to work.
    needs_arguments: ClassVar[tuple[str, ...]] = ("inputs_embeds", "attention_mask", "labels")
    #: why, for the error message when one is missing.
    needs_reason: ClassVar[str] = "the virtual tokens are prepended to the input embeddings"

    Config = PromptLearningConfig

    def build(self, model: torch.nn.Module, layout: Layout) -> VirtualTokens:
        raise NotImplementedError

    def check_sites(self, layout: Layout, sites: Sequence[Site]) -> None:
        """Reject sites of the wrong kind (the placement must resolve ``site_kind`` sites)."""
        wrong = [s.path or "<model>" for s in sites if s.kind != self.site_kind]
        if wrong:
            raise AdapterError(
                f"adapter '{self.name}' goes to {self.site_kind} sites; the placement resolved "
                f"other sites: {', '.join(wrong[:5])}"
            )

    def attach(self, model: torch.nn.Module, layout: Layout, sites: Sequence[Site]) -> VirtualTokens:
        """Build the virtual tokens on the device and dtype of the model's input embeddings and
        hook the model's forward. Returns the module (also at ``model.lladapt_virtual_tokens``)."""
        self.check_sites(layout, sites)
        self.check_model(model)
        tokens = self.build(model, layout)
        self._peft_config = self.peft_config(model, layout)
        _install(model, tokens)  # last: nothing can fail after the model has changed
        self._model: torch.nn.Module | None = model
        self._tokens = tokens
        return tokens

    def check_model(self, model: torch.nn.Module) -> None:
        """The model's forward takes the arguments this adapter rewrites (by name: a catch-all
        ``**kwargs`` may silently drop them)."""
        missing = hf_compat.missing_arguments(model, self.needs_arguments)
        if missing:
            raise AdapterError(
                f"adapter '{self.name}' cannot work with {type(model).__name__}: its forward takes "
                f"no {', '.join(missing)}, and {self.needs_reason}"
            )

    def detach(self) -> None:
        """Remove the virtual tokens and the forward hook: the base model is as before. A no-op
        when nothing is attached (an attach that failed, or a second detach)."""
        model = getattr(self, "_model", None)
        if model is not None and attached_virtual_tokens(model) is self._tokens:
            detach_virtual_tokens(model)
        self._model = None

    # -- PEFT interop ---------------------------------------------------------------------------

    def peft_config(self, model: torch.nn.Module, layout: Layout) -> dict[str, Any]:
        """PEFT's ``adapter_config.json`` for this adapter on ``model``, in inference mode: PEFT
        then uses the saved ``prompt_embeddings`` as they are, with no encoder."""
        return {
            "peft_type": self.peft_type,
            "task_type": "CAUSAL_LM",
            "inference_mode": True,
            "num_virtual_tokens": self.config.num_virtual_tokens,
            "num_transformer_submodules": 1,
            "num_layers": layout.num_layers,
            "num_attention_heads": layout.num_attention_heads,
            "token_dim": layout.hidden_size,
            "base_model_name_or_path": hf_compat.name_or_path(model),
            **self._peft_fields(model, layout),
        }

    def _peft_fields(self, model: torch.nn.Module, layout: Layout) -> dict[str, Any]:
        return {}

    def to_peft(self, state: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """PEFT's config and ``prompt_embeddings`` (computed from ``state``), plus ``state``
        itself so that lladapt reloads the encoder exactly."""
        prefix = MODULE_NAME + "."
        params = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        with torch.no_grad():
            exported = torch.func.functional_call(self._tokens, params, ())
        return dict(self._peft_config), {PEFT_KEY: exported.detach().contiguous(), **state}

    @classmethod
    def from_peft(
        cls, peft_config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The state in a folder: lladapt's own keys when present (written by :meth:`to_peft`),
        else PEFT's ``prompt_embeddings`` as the virtual tokens themselves."""
        own = {k: v for k, v in tensors.items() if k.startswith(MODULE_NAME + ".")}
        if own:
            return own
        if PEFT_KEY not in tensors:
            raise AdapterError(
                f"a PEFT {peft_config.get('peft_type')} file holds '{PEFT_KEY}'; this one has "
                f"{', '.join(sorted(tensors)) or 'no tensors'}"
            )
        return {f"{MODULE_NAME}.embedding.weight": tensors[PEFT_KEY]}

    @classmethod
    def sites_from_peft(
        cls, peft_config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], layout: Layout
    ) -> tuple[ComponentConfig, list[Site]]:
        """This adapter's Config and sites for a folder PEFT wrote."""
        return cls.config_from_peft(peft_config), cls.default_sites(layout)

    @classmethod
    def config_from_peft(cls, peft_config: Mapping[str, Any]) -> ComponentConfig:
        """The Config that reproduces a PEFT folder (PEFT stores the virtual tokens, not an
        encoder, so the Config has none)."""
        return cls.Config(num_virtual_tokens=int(peft_config["num_virtual_tokens"]))

    @classmethod
    def default_sites(cls, layout: Layout) -> list[Site]:
        """The sites of the default placement."""
        return [Site(path=layout.embeddings, kind="model")]


def embeddings_path(model: torch.nn.Module, layout: Layout) -> str:
    """Module path of the model's token embeddings: the layout's, else ``get_input_embeddings()``'s."""
    if layout.embeddings:
        try:
            model.get_submodule(layout.embeddings)
        except AttributeError:
            raise AdapterError(
                f"the layout names '{layout.embeddings}' as the input embeddings, but the model "
                "has no such module"
            ) from None
        return layout.embeddings
    getter = getattr(model, "get_input_embeddings", None)
    target = getter() if getter is not None else None
    for path, module in model.named_modules():
        if target is not None and module is target:
            return path
    raise AdapterError("cannot find the model's input embeddings (the layout names none)")


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
