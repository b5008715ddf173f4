"""Shared machinery of the prompt-learning adapters: prefix tuning, prompt tuning and P-tuning.

These adapters change no module of the base model. They condition it through *virtual tokens*:
trainable key/value prefixes in every layer's attention cache (prefix tuning) or trainable input
embeddings prepended to the sequence (prompt tuning, P-tuning). This module holds what the
adapters share as components (their config fields, PEFT interop, attaching and detaching); the
trainable torch modules and the forward hook are in :mod:`.virtual_tokens` and
:mod:`.prompt_encoders`, imported only when an adapter is built, so that listing the plugins
never imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import PositiveInt

from lladapt import Adapter, AdapterError, ComponentConfig, Layout, Site
from lladapt.common import hf_compat
from lladapt.plugins.adapters.prompt_names import MODULE_NAME

if TYPE_CHECKING:
    import torch

    from lladapt.plugins.adapters.virtual_tokens import VirtualTokens

__all__ = [
    "MODULE_NAME",
    "PEFT_KEY",
    "PromptLearningAdapter",
    "PromptLearningConfig",
    "embeddings_path",
]



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

    Saving (``lladapt.adapters.model`` contract): the state is the module's parameters, keyed
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
        from lladapt.plugins.adapters.virtual_tokens import install_virtual_tokens

        self.check_sites(layout, sites)
        self.check_model(model)
        tokens = self.build(model, layout)
        self._peft_config = self.peft_config(model, layout)
        install_virtual_tokens(model, tokens)  # last: nothing can fail after the model has changed
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
        from lladapt.plugins.adapters.virtual_tokens import (
            attached_virtual_tokens,
            detach_virtual_tokens,
        )

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
        import torch

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

