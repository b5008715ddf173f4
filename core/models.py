"""Resolving and loading the base model named by a config's ``model`` section.

``model.source`` may be

* a **preset** name (``llama-7b``): a known architecture built on the meta device, without weights
  or tokenizer (for ``lladapt params`` and for planning);
* a **local folder** saved by transformers (``config.json`` + weights), or a folder that holds one
  ``.gguf`` file;
* a **.gguf file** (llama.cpp format; transformers dequantizes it; the folder is the file's parent);
* a **hub id** (``huggyllama/llama-7b``), loaded with ``from_pretrained`` at ``model.revision``
  through transformers' own hub cache. Offline and not cached is a :class:`ModelLoadError` that
  says what to do.

A local path that exists wins over a preset of the same name; a preset wins over a hub id.

The backbone (which knows the model's layout by role) is picked from the config's ``model_type``
unless ``model.backbone`` names one. Public API::

    loaded = load_model(config.model)            # LoadedModel(model, tokenizer, backbone, ...)
    loaded = load_model(config.model, meta=True) # the architecture only, no weights
    find_preset("llama-7b")                      # (LlamaBackbone, "llama-7b") or None
    resolve_backbone(section, hf_config)         # a Backbone instance
    with padding_for(tokenizer, "generate"): ... # left padding for generation

Imports torch and transformers lazily (inside functions), like the rest of lladapt's core.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lladapt.errors import ModelLoadError
from lladapt.interfaces import Backbone, Layout
from lladapt.registry import did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from lladapt.config import ModelSection, QuantizationConfig

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

SourceKind = Literal["preset", "folder", "gguf", "hub"]

#: tokenizer padding side per purpose: decoder-only generation needs the prompt flush against the
#: new tokens (left); training pads after the labels (right), the way the paper's code did.
PADDING_SIDES: dict[str, str] = {"generate": "left", "train": "right"}


@dataclass(frozen=True)
class ModelSource:
    """Where ``model.source`` points, once resolved."""

    kind: SourceKind
    #: preset name, folder path, or hub id (for ``gguf``: the file's folder).
    location: str
    #: the ``.gguf`` file name inside ``location`` (``gguf`` only).
    gguf_file: str | None = None
    #: the backbone class that declares the preset (``preset`` only).
    preset_backbone: type[Backbone] | None = None

    def describe(self) -> str:
        if self.kind == "gguf":
            return f"GGUF file '{Path(self.location) / (self.gguf_file or '')}'"
        return {"preset": "preset", "folder": "folder", "hub": "hub model"}[self.kind] + (
            f" '{self.location}'"
        )

    def pretrained_kwargs(self, revision: str | None, trust_remote_code: bool) -> dict[str, Any]:
        """Keyword arguments shared by every ``from_pretrained`` call on this source."""
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if self.kind == "hub" and revision:
            kwargs["revision"] = revision
        if self.gguf_file:
            kwargs["gguf_file"] = self.gguf_file
        return kwargs


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


# --------------------------------------------------------------------------- resolving


def _backbones() -> list[type[Backbone]]:
    from lladapt import get_registry

    registry = get_registry("backbone")
    return [registry.get(name) for name in registry.names()]


def find_preset(name: str) -> tuple[type[Backbone], str] | None:
    """The backbone class declaring preset ``name`` (case-insensitive), and its exact name."""
    for cls in _backbones():
        for preset in cls.presets:
            if preset.lower() == name.lower():
                return cls, preset
    return None


def _preset_names() -> list[str]:
    return sorted(p for cls in _backbones() for p in cls.presets)


def _looks_like_path(source: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else with a separator is a local path."""
    return (
        source.startswith(("/", "./", "../", "~", "."))
        or source.count("/") > 1
        or "\\" in source
        or source.lower().endswith(".gguf")
    )


def resolve_source(source: str) -> ModelSource:
    """Classify ``model.source`` (see the module docstring for the order of precedence)."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(
                f"model.source '{source}' is a file but not a .gguf file; give a model folder "
                "(with config.json), a .gguf file, a hub id or a preset"
            )
        return ModelSource("gguf", str(path.resolve().parent), gguf_file=path.name)
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelSource("folder", str(path))
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource("gguf", str(path.resolve()), gguf_file=ggufs[0])
        found = f"; it holds {len(ggufs)} .gguf files ({', '.join(ggufs)}): name one" if ggufs else ""
        raise ModelLoadError(
            f"model.source: folder '{source}' has no config.json, so it is not a transformers "
            f"model folder{found}"
        )
    preset = find_preset(source)
    if preset is not None:
        return ModelSource("preset", preset[1], preset_backbone=preset[0])
    if _looks_like_path(source):
        kind = ".gguf file" if source.lower().endswith(".gguf") else "folder"
        raise ModelLoadError(
            f"model.source: no such {kind} '{source}' (resolved to '{path.resolve()}')"
        )
    return ModelSource("hub", source)


def _hub_error(source: ModelSource, section: ModelSection, exc: BaseException) -> ModelLoadError:
    """Turn a transformers/hub failure into a message that says what to do."""
    from huggingface_hub import constants

    text = str(exc)
    offline = constants.HF_HUB_OFFLINE or "couldn't connect" in text.lower()
    guess = did_you_mean(source.location, _preset_names())
    hint = f" Did you mean the preset '{guess}'?" if guess else ""
    if source.kind == "hub" and offline:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub cannot be reached"
        rev = f" at revision '{section.revision}'" if section.revision else ""
        return ModelLoadError(
            f"cannot load model '{source.location}'{rev}: it is not a local folder or a preset, "
            f"{why}, and it is not in the Hugging Face cache ({constants.HF_HUB_CACHE}). "
            f"Download it on a machine with network access (`hf download {source.location}`) "
            "and copy the cache (or set HF_HOME), or set model.source to a local folder."
            + hint
        )
    return ModelLoadError(f"cannot load {source.describe()}: {text.strip()}{hint}")


#: exceptions from transformers / huggingface_hub that mean "this source cannot be loaded".
_LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, ImportError)


def load_hf_config(section: ModelSection, source: ModelSource | None = None) -> PretrainedConfig:
    """The transformers config of the model, without its weights."""
    from transformers import AutoConfig

    source = source or resolve_source(section.source)
    if source.kind == "preset" and source.preset_backbone is not None:
        return source.preset_backbone().preset_config(source.location)
    try:
        return AutoConfig.from_pretrained(
            source.location, **source.pretrained_kwargs(section.revision, section.trust_remote_code)
        )
    except _LOAD_ERRORS as exc:
        raise _hub_error(source, section, exc) from exc


def resolve_backbone(section: ModelSection, hf_config: PretrainedConfig) -> Backbone:
    """The backbone named by ``model.backbone``, else the one whose ``model_types`` include the
    config's ``model_type``. An unknown ``model_type`` is an error listing what is registered."""
    from lladapt import get_registry

    if section.backbone:
        cls = get_registry("backbone").get(section.backbone)
        return cls(cls.Config())
    model_type = getattr(hf_config, "model_type", None)
    candidates = [cls for cls in _backbones() if model_type in cls.model_types]
    if not candidates:
        known = "; ".join(
            f"{cls.name} ({', '.join(cls.model_types) or 'no model_type'})" for cls in _backbones()
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


# --------------------------------------------------------------------------- building


def _torch_dtype(name: str) -> torch.dtype:
    import torch

    return getattr(torch, name)


def build_meta_model(hf_config: PretrainedConfig, *, trust_remote_code: bool = False) -> PreTrainedModel:
    """The causal LM of ``hf_config`` on the meta device: every parameter has its shape and no
    storage, so a 13B model is built in well under a second and counts are exact."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(hf_config, trust_remote_code=trust_remote_code)


def _auto_compute_dtype() -> torch.dtype:
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _bnb_config(quant: QuantizationConfig, dtype: str) -> Any:
    """A transformers ``BitsAndBytesConfig`` for ``model.quantization``."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(
            f"model.quantization: {quant.bits}-bit loading needs bitsandbytes "
            "(pip install 'lladapt[quant]')"
        ) from exc
    from transformers import BitsAndBytesConfig

    if quant.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    if quant.compute_dtype:
        compute = _torch_dtype(quant.compute_dtype)
    elif dtype != "auto":
        compute = _torch_dtype(dtype)
    else:
        compute = _auto_compute_dtype()
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.quant_type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=compute,
    )


def _fix_bnb_cpu_packing(model: torch.nn.Module) -> None:
    """bitsandbytes' AVX512-bf16 CPU inference path repacks 4-bit weights and asserts that the
    out features are a multiple of 32 and the in features of the block size; small models (e.g.
    stories260k's FFN of 172) crash there. Send such layers down the generic path instead."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:  # pragma: no cover - quantized loading already needed it
        return
    for module in model.modules():
        if not isinstance(module, Linear4bit) or not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        quant_state = getattr(module.weight, "quant_state", None)
        blocksize = getattr(quant_state, "blocksize", 64)
        if module.out_features % 32 or module.in_features % blocksize:
            module.support_avx512bf16_for_cpu = False


def _load_weights(section: ModelSection, source: ModelSource) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    kwargs = source.pretrained_kwargs(section.revision, section.trust_remote_code)
    kwargs["dtype"] = section.dtype if section.dtype == "auto" else _torch_dtype(section.dtype)
    if section.quantization is not None:
        kwargs["quantization_config"] = _bnb_config(section.quantization, section.dtype)
    if section.device_map is not None:
        kwargs["device_map"] = section.device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(source.location, **kwargs)
    except _LOAD_ERRORS as exc:
        raise _hub_error(source, section, exc) from exc
    if section.quantization is not None and section.quantization.bits == 4:
        _fix_bnb_cpu_packing(model)
    return model


def load_tokenizer(section: ModelSection, backbone: Backbone) -> PreTrainedTokenizerBase:
    """The tokenizer of ``model.tokenizer`` (else of ``model.source``), fixed by the backbone
    (a pad token when missing). Padding side: see :func:`padding_for`."""
    from transformers import AutoTokenizer

    source = resolve_source(section.tokenizer or section.source)
    if source.kind == "preset":
        raise ModelLoadError(
            f"preset '{source.location}' has no tokenizer; set model.tokenizer to a folder or hub id"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source.location, **source.pretrained_kwargs(section.revision, section.trust_remote_code)
        )
    except _LOAD_ERRORS as exc:
        raise _hub_error(source, section, exc) from exc
    return backbone.prepare_tokenizer(tokenizer)


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


def _module_at(model: torch.nn.Module, path: str) -> torch.nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _expected_features(layout: Layout, role: str) -> tuple[int, int]:
    """(in, out) features of a role's Linear implied by the layout's sizes."""
    hidden, ffn = layout.hidden_size, layout.intermediate_size
    q_width = layout.num_attention_heads * layout.head_dim
    kv_width = layout.num_key_value_heads * layout.head_dim
    return {
        "q": (hidden, q_width),
        "k": (hidden, kv_width),
        "v": (hidden, kv_width),
        "qkv": (hidden, q_width + 2 * kv_width),
        "o": (q_width, hidden),
        "gate": (hidden, ffn),
        "up": (hidden, ffn),
        "down": (ffn, hidden),
    }[role]


def verify_layout(model: torch.nn.Module, layout: Layout, backbone: str = "backbone") -> None:
    """Check that ``layout`` describes ``model``: the layer list has ``num_layers`` layers and every
    role of every layer is a Linear (quantized Linears included) of the width the layout's sizes
    imply. A mismatch (a wrong ``model.backbone``, a plugin bug) is a :class:`ModelLoadError`
    naming the module, instead of adapters of the wrong width later."""
    import torch

    layers = _module_at(model, layout.layers)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ModelLoadError(
            f"backbone '{backbone}': the model has no decoder layer list at '{layout.layers}'"
        )
    if len(layers) != layout.num_layers:
        raise ModelLoadError(
            f"backbone '{backbone}': '{layout.layers}' holds {len(layers)} layers, the layout "
            f"says {layout.num_layers}"
        )
    for block in filter(None, (layout.layer.attention, layout.layer.mlp)):
        if _module_at(layers[0], block) is None:
            raise ModelLoadError(
                f"backbone '{backbone}': no module '{layout.layer_path(0)}.{block}'"
            )
    for index in range(layout.num_layers):
        for role in layout.layer.roles:
            path = layout.module_path(index, role)
            module = _module_at(model, path)
            if not isinstance(module, torch.nn.Linear):
                found = type(module).__name__ if module is not None else "nothing"
                raise ModelLoadError(
                    f"backbone '{backbone}': role '{role}' should be a Linear at '{path}', "
                    f"found {found}"
                )
            expected = _expected_features(layout, role)
            if (module.in_features, module.out_features) != expected:
                raise ModelLoadError(
                    f"backbone '{backbone}': role '{role}' at '{path}' is "
                    f"{module.in_features}->{module.out_features}, the layout implies "
                    f"{expected[0]}->{expected[1]}"
                )
    if layout.embeddings and _module_at(model, layout.embeddings) is None:
        raise ModelLoadError(f"backbone '{backbone}': no embeddings at '{layout.embeddings}'")



# --------------------------------------------------------------------------- loading


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
        _sync_pad_token(model, tokenizer)
    model = backbone.prepare_model(model)
    verify_layout(model, layout, backbone.name)
    return LoadedModel(model, tokenizer, backbone, layout, model.config, source)


def _sync_pad_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
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
