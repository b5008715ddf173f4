"""The contracts of the component kinds a plugin can provide.

A component is a class with a ``name``, an optional tuple of ``aliases``, a one-line docstring
summary (shown by ``lladapt plugins``) and a nested pydantic ``Config`` (``extra="forbid"``) that
holds every field a user may set for it. Plugins register classes, never instances; lladapt builds
the instance from the validated config: ``cls(cls.Config(**fields))``.

This module imports no torch, so that config validation and ``lladapt --help`` stay fast.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "Adapter",
    "AnswerParser",
    "Backbone",
    "Component",
    "ComponentConfig",
    "Dataset",
    "Example",
    "LayerLayout",
    "Layout",
    "Placement",
    "PromptTemplate",
    "Site",
    "ROLES",
]


class ComponentConfig(BaseModel):
    """Base of every component's ``Config``: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class Component:
    """Base of every component class."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()

    class Config(ComponentConfig):
        pass

    def __init__(self, config: ComponentConfig | None = None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def description(cls) -> str:
        """First line of the class docstring."""
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


# --------------------------------------------------------------------------- backbones

#: Role names of the Linear layers inside one decoder layer. A backbone maps each role it has to a
#: module path relative to the layer. ``qkv`` is a fused query/key/value projection (BLOOM).
#: ``up`` is the MLP's input projection (``fc_in``, ``fc1``, ``dense_h_to_4h``), ``gate`` the
#: gated-MLP's second input projection (LLaMA) and ``down`` the MLP's output projection.
ROLES: tuple[str, ...] = ("q", "k", "v", "qkv", "o", "gate", "up", "down")


@dataclass(frozen=True)
class LayerLayout:
    """Where the parts of ONE decoder layer are, relative to that layer's module."""

    #: role -> module path relative to the decoder layer, e.g. ``{"q": "self_attn.q_proj"}``.
    projections: Mapping[str, str]
    #: the attention block's module path (``self_attn``, ``self_attention``, ``attn``).
    attention: str
    #: the MLP block's module path, or None when the MLP is not a submodule (OPT: ``fc1``/``fc2``
    #: live directly on the layer).
    mlp: str | None
    #: roles that read the attention block's input, in order (``("q","k","v")`` or ``("qkv",)``).
    attention_in: tuple[str, ...]
    #: role whose output is the attention block's output (``"o"``).
    attention_out: str = "o"
    #: roles that read the MLP block's input (``("gate","up")`` or ``("up",)``).
    mlp_in: tuple[str, ...] = ("up",)
    #: role whose output is the MLP block's output (``"down"``).
    mlp_out: str = "down"

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(r for r in ROLES if r in self.projections)

    def resolve_role(self, role: str) -> str:
        """Module path for ``role``; ``q``/``k``/``v`` fall back to a fused ``qkv``."""
        if role in self.projections:
            return self.projections[role]
        if role in ("q", "k", "v") and "qkv" in self.projections:
            return self.projections["qkv"]
        raise KeyError(role)


@dataclass(frozen=True)
class Layout:
    """A model's layout by role: what placements resolve against (never hard-coded names)."""

    #: path of the ``nn.ModuleList`` of decoder layers, e.g. ``model.layers``.
    layers: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    layer: LayerLayout
    #: path of the input embedding module (for prompt tuning), e.g. ``model.embed_tokens``.
    embeddings: str = ""

    def layer_path(self, index: int) -> str:
        return f"{self.layers}.{index}"

    def module_path(self, index: int, role_or_name: str) -> str:
        """Full path of a role (``q``) or of a layer-relative module name (``mlp.up_proj``)."""
        try:
            rel = self.layer.resolve_role(role_or_name)
        except KeyError:
            rel = role_or_name
        return f"{self.layer_path(index)}.{rel}"


class Backbone(Component):
    """A model family: how to load it and where its parts are.

    Subclasses set ``model_types`` (the transformers ``model_type`` values they handle) and
    ``presets`` (name -> transformers config kwargs of a known architecture, instantiated on the
    meta device for parameter counts without weights), and implement :meth:`layout`.
    """

    model_types: ClassVar[tuple[str, ...]] = ()
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    class Config(ComponentConfig):
        pass

    def layout(self, hf_config: PretrainedConfig) -> Layout:
        raise NotImplementedError

    def preset_config(self, preset: str) -> PretrainedConfig:
        """The transformers config of a preset architecture."""
        from transformers import AutoConfig

        kwargs = dict(self.presets[preset])
        model_type = kwargs.pop("model_type")
        return AutoConfig.for_model(model_type, **kwargs)

    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
        """Family-specific tokenizer fixes. Default: a pad token (eos/unk) if missing."""
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
        return tokenizer

    def prepare_model(self, model: PreTrainedModel) -> PreTrainedModel:
        """Family-specific model fixes after loading (pad token id in the generation config...)."""
        return model


# --------------------------------------------------------------------------- placements


Mode = Literal["input", "output", "parallel"]


@dataclass(frozen=True)
class Site:
    """One place an adapter goes.

    * module sites (``kind="module"``): ``path`` is a Linear; ``mode`` says where the adapter sits:
      ``input`` transforms the module's input, ``output`` its output, ``parallel`` adds
      ``adapter(x)`` to ``module(x)``. With ``source`` set (``parallel`` only) the adapter reads the
      input of the module at ``source`` instead (alongside a whole block: from the block's first
      projection to its last).
    * layer sites (``kind="layer"``): ``path`` is a decoder layer (prefix tuning).
    * model sites (``kind="model"``): ``path`` is the input embeddings (prompt tuning).
    """

    path: str
    layer: int | None = None
    role: str | None = None
    mode: Mode = "output"
    kind: Literal["module", "layer", "model"] = "module"
    source: str | None = None


class Placement(Component):
    """Where an adapter goes: resolves to a list of :class:`Site` on a given layout."""

    def resolve(self, layout: Layout, adapter: Adapter) -> list[Site]:
        raise NotImplementedError


# --------------------------------------------------------------------------- adapters


class Adapter(Component):
    """A parameter-efficient module attached to a frozen base model.

    ``site_kind`` says what a placement must resolve for it: ``module`` (Linear layers, with the
    modes in ``modes``), ``layer`` (decoder layers: prefix tuning) or ``model`` (the input
    embeddings: prompt tuning). ``default_placement`` is the placement config used when the user
    names none, e.g. ``{"name": "modules", "modules": [{"name": "q"}, {"name": "v"}]}``.
    """

    site_kind: ClassVar[Literal["module", "layer", "model"]] = "module"
    modes: ClassVar[frozenset[str]] = frozenset({"output"})
    default_placement: ClassVar[Mapping[str, Any]] = {"name": "mlp"}
    #: learning rate of the paper's recipe for this adapter (prefix tuning uses 3e-2).
    default_learning_rate: ClassVar[float] = 3e-4
    #: how the block placements (``attention``, ``mlp``, ``both``) put a module adapter on a whole
    #: block: ``after`` = one ``output`` site on the block's out role (series: after the MLP);
    #: ``alongside`` = one ``parallel`` site reading the block's first input projection's input and
    #: adding to its out role's output (parallel: He et al.); ``projections`` = every projection of
    #: the block, each in :meth:`default_mode` (LoRA).
    block_position: ClassVar[Literal["after", "alongside", "projections"]] = "projections"
    #: the config option that sizes the adapter (its trainable count grows with it), e.g. ``r``;
    #: ``lladapt sweep``'s budget matching sets it. ``None``: the adapter has no size.
    size_option: ClassVar[str | None] = None

    def default_mode(self, role: str | None) -> str:
        """The mode a site gets when the placement does not say (e.g. series: ``input`` on up/gate)."""
        return sorted(self.modes)[0]

    def attach(self, model: torch.nn.Module, layout: Layout, sites: Sequence[Site]) -> Any:
        """Insert this adapter's modules at ``sites`` of ``model``; create parameters on the
        device and dtype of the weights they sit beside (the meta device included)."""
        raise NotImplementedError


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Example:
    """One record in the LLM-Adapters format."""

    instruction: str
    input: str = ""
    output: str = ""
    answer: str = ""
    #: where it came from, e.g. ``gsm8k/test.json#12`` (for error messages and overlap reports).
    source: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)


class Dataset(Component):
    """A named set of examples with splits, and how to score answers to it."""

    #: splits this dataset has (``train``, ``test``, ...).
    splits: ClassVar[tuple[str, ...]] = ("test",)
    #: ``math`` or ``commonsense`` (or a plugin's own word).
    task: ClassVar[str] = "math"
    #: default answer parser name.
    parser: ClassVar[str] = "number"
    #: fields for that parser's ``Config`` (e.g. a multiple-choice set's answer words); passed to
    #: any parser whose ``Config`` has the same fields (``lladapt.data.loading.make_parser``).
    parser_options: ClassVar[Mapping[str, Any]] = {}
    #: metric name.
    metric: ClassVar[str] = "accuracy"
    #: new tokens to generate when evaluating (paper: math 256, commonsense 32).
    max_new_tokens: ClassVar[int] = 256

    #: how an answer choice reads as the continuation of the evaluation prompt (log-likelihood
    #: scoring); the paper's training data answers "the correct answer is solution1".
    choice_template: ClassVar[str] = "the correct answer is {choice}"

    def load(self, split: str) -> list[Example]:
        raise NotImplementedError

    def choices(self, example: Example) -> Mapping[str, str] | None:
        """For ``eval.scoring: loglik``: each answer choice of ``example`` (as the parser reads
        it, e.g. ``solution1``) -> the continuation text whose likelihood stands for it. None:
        not a multiple-choice item. Default: the ``choices`` of :attr:`parser_options`, each
        through :attr:`choice_template`. Override for per-item choice texts."""
        words = dict(getattr(self, "parser_options", {}) or {}).get("choices")
        if not words:
            return None
        return {str(w): self.choice_template.format(choice=w) for w in words}


class AnswerParser(Component):
    """Text -> answer, and answer == gold. A failed parse returns None (counted apart)."""

    def parse(self, text: str) -> Any | None:
        raise NotImplementedError

    def is_correct(self, prediction: Any | None, gold: str) -> bool:
        raise NotImplementedError


class PromptTemplate(Component):
    """Renders an example into the training prompt (with the response) and the eval prompt."""

    #: text that separates the prompt from the response in a decoded generation.
    response_marker: ClassVar[str] = "### Response:"

    def train_prompt(self, example: Example) -> str:
        """Full training text: prompt plus ``example.output`` (EOS is added by the tokenizer step)."""
        raise NotImplementedError

    def train_prefix(self, example: Example) -> str:
        """The part of :meth:`train_prompt` before the response (masked when
        ``train_on_inputs`` is False)."""
        raise NotImplementedError

    def eval_prompt(self, example: Example) -> str:
        raise NotImplementedError

    def extract_response(self, decoded: str) -> str:
        """The response in a decoded prompt+generation (the paper: text after the first marker,
        cut at a second one)."""
        parts = decoded.split(self.response_marker)
        return parts[1].strip() if len(parts) > 1 else decoded.strip()
