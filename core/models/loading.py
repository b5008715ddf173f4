"""Loading the base model named by a config's ``model`` section: :func:`load_model` chains the
steps, each in its own module:

* :mod:`lladapt.models.source`: what ``model.source`` names (preset, local folder, ``.gguf`` file,
  hub id; the order of precedence is there) and its transformers config;
* the backbone that knows the model's layout by role, picked from the config's ``model_type``
  unless ``model.backbone`` names one (:func:`resolve_backbone`, here);
* :mod:`lladapt.models.quantization`: bitsandbytes set-up for ``model.quantization``;
* :mod:`lladapt.models.tokenizer`: the tokenizer, its pad token, the padding side per purpose;
* :mod:`lladapt.models.layout_check`: that the backbone's layout describes the loaded model.

Public API (the names of those modules are importable from here too)::

    loaded = load_model(config.model)            # LoadedModel(model, tokenizer, backbone, ...)
    loaded = load_model(config.model, meta=True) # the architecture only, no weights
    find_preset("llama-7b")                      # (LlamaBackbone, "llama-7b") or None
    resolve_backbone(section, hf_config)         # a Backbone instance
    with padding_for(tokenizer, "generate"): ... # left padding for generation

Imports torch and transformers lazily (inside functions), like the rest of lladapt's core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lladapt.common.errors import ModelLoadError
from lladapt.components.interfaces import Backbone, Layout
from lladapt.models.layout_check import verify_layout
from lladapt.models.quantization import bnb_config, fix_bnb_cpu_packing, torch_dtype
from lladapt.models.source import (
    ModelSource,
    find_preset,
    load_hf_config,
    load_pretrained,
    registered_backbones,
    resolve_source,
)
from lladapt.models.tokenizer import PADDING_SIDES, load_tokenizer, padding_for, sync_pad_token

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from lladapt.config import ModelSection

__all__ = [
    "LoadedModel",
    "ModelSource",
    "PADDING_SIDES",
    "build_meta_model",
    "find_preset",
    "load_hf_config",
    "load_model",
    "load_tokenizer",
    "padding_for",
    "resolve_backbone",
    "resolve_source",
    "verify_layout",
]


@dataclass
class LoadedModel:
    """A base model ready for adapters: the model, its tokenizer (None for presets and meta
    loads), the backbone that describes it, its layout by role, and its transformers config."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase | None
    backbone: Backbone
    layout: Layout
    hf_config: PretrainedConfig
    source: ModelSource


def resolve_backbone(section: ModelSection, hf_config: PretrainedConfig) -> Backbone:
    """The backbone named by ``model.backbone``, else the one whose ``model_types`` include the
    config's ``model_type``. An unknown ``model_type`` is an error listing what is registered."""
    from lladapt.components.plugin_manager import get_registry

    if section.backbone:
        cls = get_registry("backbone").get(section.backbone)
        return cls(cls.Config())
    model_type = getattr(hf_config, "model_type", None)
    backbones = registered_backbones()
    candidates = [cls for cls in backbones if model_type in cls.model_types]
    if not candidates:
        known = "; ".join(
            f"{cls.name} ({', '.join(cls.model_types) or 'no model_type'})" for cls in backbones
        )
        raise ModelLoadError(
            f"no backbone handles model_type '{model_type}' (model '{section.source}'). "
            f"Registered backbones (model_types): {known or '(none)'}. Set model.backbone to one "
            "whose layout matches this model, or add a backbone plugin (see docs/backbones.md)."
        )
    if len(candidates) > 1:
        names = ", ".join(cls.name for cls in candidates)
        raise ModelLoadError(
            f"several backbones handle model_type '{model_type}' ({names}); set model.backbone "
            "to choose one"
        )
    return candidates[0](candidates[0].Config())


def build_meta_model(hf_config: PretrainedConfig, *, trust_remote_code: bool = False) -> PreTrainedModel:
    """The causal LM of ``hf_config`` on the meta device: every parameter has its shape and no
    storage, so a 13B model is built in well under a second and counts are exact."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(hf_config, trust_remote_code=trust_remote_code)


#: Keyword arguments every ``AutoModelForCausalLM.from_pretrained`` call gets. transformers 5.25
#: turned hub kernels on by default (``use_kernels=None`` means True): layers replaced by code
#: fetched from the Hugging Face hub at load time, and without the ``kernels`` package a load fails
#: outright ("Kernels are not available"). lladapt runs no downloaded code unless asked (as with
#: ``trust_remote_code``), so it asks for none; 5.0 to 5.24 take the argument, default False.
MODEL_LOAD_KWARGS: dict[str, object] = {"use_kernels": False}


def _load_weights(section: ModelSection, source: ModelSource) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    kwargs = {**MODEL_LOAD_KWARGS,
              "dtype": section.dtype if section.dtype == "auto" else torch_dtype(section.dtype)}
    if section.quantization is not None:
        kwargs["quantization_config"] = bnb_config(section.quantization, section.dtype)
    if section.device_map is not None:
        kwargs["device_map"] = section.device_map
    model = load_pretrained(AutoModelForCausalLM, source, section, **kwargs)
    if section.quantization is not None and section.quantization.bits == 4:
        fix_bnb_cpu_packing(model)
    return model


def load_model(section: ModelSection, *, meta: bool = False) -> LoadedModel:
    """Load the base model (and tokenizer) of ``section``.

    ``meta=True`` builds the architecture on the meta device from its config only (no weights, no
    tokenizer, no download beyond ``config.json``): what ``lladapt params`` uses. Presets are always
    built that way. Quantization and ``device_map`` apply to real loads only.
    """
    source = resolve_source(section.source)
    hf_config = load_hf_config(section, source)
    backbone = resolve_backbone(section, hf_config)
    layout = backbone.layout(hf_config)
    tokenizer = None
    if meta or source.kind == "preset":
        model = build_meta_model(hf_config, trust_remote_code=section.trust_remote_code)
    else:
        model = _load_weights(section, source)
        tokenizer = load_tokenizer(section, backbone)
        sync_pad_token(model, tokenizer)
    model = backbone.prepare_model(model)
    verify_layout(model, layout, backbone.name)
    return LoadedModel(model, tokenizer, backbone, layout, model.config, source)
