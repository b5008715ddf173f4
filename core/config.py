"""The run configuration: pydantic models, loading from YAML/JSON, ``--set`` overrides, and the
validation of each named component's fields against that component's own ``Config``.

Every problem is collected in one pass and raised as one :class:`ConfigError`, each under its
dotted path, with "did you mean" for misspelled keys and names.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from lladapt.errors import ConfigError, ErrorItem, UnknownComponentError
from lladapt.interfaces import ComponentConfig
from lladapt.registry import did_you_mean

__all__ = [
    "AdapterSection",
    "ComponentSection",
    "DataSection",
    "DatasetRef",
    "EvalSection",
    "ModelSection",
    "QuantizationConfig",
    "RunConfig",
    "TrainSection",
    "apply_overrides",
    "load_config",
]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_assignment=True)


class QuantizationConfig(Section):
    """Load the base model's Linear layers quantized with bitsandbytes (QLoRA-style)."""

    bits: Literal[4, 8]
    #: 4-bit data type.
    quant_type: Literal["nf4", "fp4"] = "nf4"
    #: quantize the 4-bit quantization constants too.
    double_quant: bool = True
    #: dtype of the 4-bit matmuls (default: the model dtype, float32 on the CPU).
    compute_dtype: Literal["float32", "float16", "bfloat16"] | None = None


class ModelSection(Section):
    """The base model. A plain string is shorthand for ``{source: ...}``."""

    #: a hub id (``huggyllama/llama-7b``), a local folder, a ``.gguf`` file, or a preset name
    #: (``llama-7b``: the architecture on the meta device, no weights, for ``lladapt params``).
    source: str
    #: backbone name; by default picked from the model's ``model_type``.
    backbone: str | None = None
    revision: str | None = None
    #: tokenizer source when it differs from ``source``.
    tokenizer: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    quantization: QuantizationConfig | None = None
    #: run code shipped with a hub model. Off unless you turn it on.
    trust_remote_code: bool = False
    #: accelerate device map (``auto`` spreads a large model over the GPUs); None: one device.
    device_map: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"source": value} if isinstance(value, str) else value


class ComponentSection(BaseModel):
    """``name`` plus the named component's own fields (validated against its ``Config``)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str
    _options: ComponentConfig | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    #: keys of this section that belong to lladapt, not to the component's Config.
    _own_keys: typing.ClassVar[frozenset[str]] = frozenset({"name"})

    def component_fields(self) -> dict[str, Any]:
        return {k: v for k, v in (self.model_extra or {}).items() if k not in self._own_keys}

    @property
    def options(self) -> ComponentConfig:
        """The component's validated ``Config`` (set by :func:`resolve_components`)."""
        if self._options is None:
            raise RuntimeError(f"component '{self.name}' was not resolved; use load_config()")
        return self._options


class DatasetRef(ComponentSection):
    """A dataset by name, with the split to read, an optional limit, and its own fields."""

    split: str | None = None
    #: use only the first N records.
    limit: PositiveInt | None = None


class DataSection(Section):
    """Training data and how it becomes token ids."""

    #: datasets to train on (a name, or a list of names / ``{name, split, limit, ...}``).
    train: list[DatasetRef] = Field(default_factory=list)
    #: prompt template name.
    template: str = "alpaca"
    #: maximum tokens per training example (the paper: 256).
    cutoff_len: PositiveInt = 256
    #: put the prompt in the loss too (the paper's default); False trains on the response only.
    train_on_inputs: bool = True
    add_eos: bool = True
    #: records held out of training for validation loss.
    val_set_size: int = Field(default=0, ge=0)
    #: a local copy of the paper's data folders (else ``LLADAPT_DATA_DIR``, else download).
    data_dir: Path | None = None
    #: what to do when training data overlaps evaluation data.
    overlap: Literal["warn", "error", "ignore"] = "warn"

    @field_validator("train", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, dict)) else value


class TrainSection(Section):
    """The training recipe (defaults: the paper's)."""

    epochs: PositiveFloat = 3.0
    #: stop after this many optimizer steps (overrides ``epochs``).
    max_steps: PositiveInt | None = None
    #: default: the adapter's own (3e-4; prefix tuning 3e-2).
    learning_rate: PositiveFloat | None = None
    batch_size: PositiveInt = 16
    micro_batch_size: PositiveInt = 4
    warmup_steps: int = Field(default=100, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: PositiveFloat | None = 1.0
    #: ``constant`` keeps the rate fixed from step 1; ``constant_with_warmup`` ramps up first.
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    #: ``auto``: fp16 on a GPU (bf16 where supported); on the CPU bf16 where it is native (AVX-512 BF16 or AMX), else fp32.
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    gradient_checkpointing: bool = False
    seed: int = 42
    logging_steps: PositiveInt = 10
    #: save a checkpoint every N steps (0: only at the end).
    save_steps: int = Field(default=200, ge=0)
    #: keep only the newest N checkpoints (0: keep all).
    save_total_limit: int = Field(default=2, ge=0)
    #: validation loss every N steps when ``data.val_set_size`` > 0 (0: only at the end).
    eval_steps: int = Field(default=200, ge=0)
    #: with a validation set: the final adapter is the one with the lowest validation loss.
    keep_best: bool = False
    #: group examples of similar length into micro-batches (less padding; order stays random).
    group_by_length: bool = True
    #: pad each micro-batch to a multiple of this (8 suits GPU tensor cores; null: no rounding).
    pad_to_multiple_of: PositiveInt | None = None
    #: ``tokens``: loss averaged over the label tokens of the whole accumulated batch (equals one
    #: big batch); ``micro_batch``: the mean of each micro-batch's mean (the paper's code).
    loss_normalization: Literal["tokens", "micro_batch"] = "tokens"
    #: ``auto``: a progress bar on a terminal, plain lines otherwise; ``bar``; ``plain``; ``none``.
    progress: Literal["auto", "bar", "plain", "none"] = "auto"
    #: experiment trackers to log to through accelerate (``tensorboard``, ``wandb``, ``mlflow``, ...).
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab",
                            "trackio"]] = Field(default_factory=list)

    @field_validator("report_to")
    @classmethod
    def _trackers_installed(cls, names: list[str]) -> list[str]:
        from lladapt.training.trackers import check_available

        return check_available(names)

    @model_validator(mode="after")
    def _batches_divide(self) -> TrainSection:
        if self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size "
                f"({self.micro_batch_size})"
            )
        return self


class EvalSection(Section):
    """Evaluation: generate, parse, score."""

    datasets: list[DatasetRef] = Field(default_factory=list)
    split: str = "test"
    #: default: each dataset's own (math 256, commonsense 32).
    max_new_tokens: PositiveInt | None = None
    num_beams: PositiveInt = 1
    batch_size: PositiveInt = 8
    #: answer parser for every dataset (default: each dataset's own).
    parser: str | None = None
    limit: PositiveInt | None = None
    #: also evaluate the untrained model first (results.json ``eval_before``): before and after.
    before_training: bool = False
    #: ``fast``: length-sorted batches, KV cache, adapter merged where it can be; ``paper``: the
    #: paper code's protocol (one item at a time, beam search 4, no cache; ignores batch_size and
    #: num_beams). See docs/evaluation.md.
    protocol: Literal["fast", "paper"] = "fast"
    #: strings that end a response (e.g. ``"### Instruction:"``); off by default (the paper's).
    stop: list[str] = Field(default_factory=list)
    #: ``generate`` and parse, or ``loglik``: pick the most likely answer choice (multiple-choice
    #: datasets only).
    scoring: Literal["generate", "loglik"] = "generate"
    #: ``loglik``: compare choices by log-likelihood per continuation token.
    length_normalize: bool = False
    #: fold the adapter into the weights while evaluating, where it can be (LoRA).
    merge_adapter: bool = True
    #: evaluate a configured adapter that was neither trained in this run nor loaded from
    #: ``adapter.path`` / ``--adapter`` (its initial weights).
    untrained_adapter: bool = False

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("datasets", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, dict)) else value


class AdapterSection(ComponentSection):
    """The adapter: ``name`` plus its fields, and optionally ``path``, a saved adapter folder
    (lladapt's or PEFT's) to load instead of initialising one."""

    path: Path | None = None
    _own_keys: typing.ClassVar[frozenset[str]] = frozenset({"name", "path"})


class RunConfig(Section):
    """A whole run: ``lladapt run CONFIG``. Only ``model`` is required."""

    model: ModelSection
    adapter: AdapterSection | None = None
    #: default: the adapter's own default placement.
    placement: ComponentSection | None = None
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    output_dir: Path = Path("runs/latest")


# --------------------------------------------------------------------------- errors


def _unwrap(annotation: Any) -> list[Any]:
    """The BaseModel classes inside an annotation (Optional, list, Union...)."""
    origin = typing.get_origin(annotation)
    if origin is None:
        return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []
    out = []
    for arg in typing.get_args(annotation):
        out.extend(_unwrap(arg))
    return out


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The pydantic model class reached by following ``loc`` from ``model``."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):
            continue
        info = current.model_fields.get(part)
        if info is None:
            return None
        models = _unwrap(info.annotation)
        current = models[0] if models else None
    return current


def _dotted(loc: Iterable[str | int]) -> str:
    return ".".join(str(p) for p in loc)


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value) if isinstance(value, str) else repr(value)


def errors_from_validation(
    exc: ValidationError, model: type[BaseModel], prefix: Sequence[str | int] = ()
) -> list[ErrorItem]:
    """Turn a pydantic ValidationError into user-facing items with dotted paths."""
    items = []
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
        path = _dotted([*prefix, *loc])
        kind = err["type"]
        if kind == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            fields = list(owner.model_fields) if owner else []
            guess = did_you_mean(str(loc[-1]), fields) if fields else None
            msg = "unknown key" + (f"; did you mean '{guess}'?" if guess else "")
            if fields and not guess:
                msg += f". Known keys: {', '.join(fields)}"
        elif kind == "missing":
            msg = "required"
        else:
            msg = err["msg"]
            if msg.startswith("Input should be "):
                msg = "must be " + msg[len("Input should be ") :]
            elif msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            if not isinstance(err.get("input"), (dict, list)) and "input" in err:
                msg += f" (got {_fmt_value(err['input'])})"
        items.append(ErrorItem(path, msg))
    return items


def component_options(
    cls: type, section: ComponentSection | Mapping[str, Any], where: str
) -> ComponentConfig:
    """The validated ``Config`` of component class ``cls`` for a config section or a plain
    ``{"name": ..., **fields}`` mapping: the one :func:`load_config` left on the section, else
    validated now; a problem is a :class:`ConfigError` with its fields under ``where``."""
    options = getattr(section, "_options", None)
    if isinstance(options, cls.Config):
        return options
    if isinstance(section, ComponentSection):
        fields = section.component_fields()
    else:
        fields = {k: v for k, v in dict(section).items() if k != "name"}
    try:
        return cls.Config.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(errors_from_validation(exc, cls.Config, prefix=[where])) from None


# --------------------------------------------------------------------------- loading


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML or JSON file into a dict, with a clear error if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such file '{path}'", source=str(path))
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse: {exc}", source=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"the top level must be a mapping of sections, not {type(data).__name__}",
            source=str(path),
        )
    return data


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML: numbers, booleans, lists)."""
    data = json.loads(json.dumps(data, default=str))  # deep copy, plain types
    errors = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            errors.append(ErrorItem("--set", f"expected dotted.key=value, got '{item}'"))
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    errors.append(ErrorItem(key, f"no list item {part} (the list has {len(node)})"))
                    break
                idx = int(part)
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
                continue
            if not isinstance(node, dict):
                errors.append(ErrorItem(key, f"'{'.'.join(parts[:i])}' is not a section"))
                break
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if isinstance(child, str) and parts[:i + 1] in (["model"], ["adapter"], ["placement"]):
                    child = {"source" if part == "model" else "name": child}
                    node[part] = child
                node = node.setdefault(part, {}) if child is None else child
    if errors:
        raise ConfigError(errors, source="--set")
    return data


def load_config(
    source: str | Path | Mapping[str, Any] | RunConfig,
    overrides: Iterable[str] = (),
    *,
    resolve: bool = True,
) -> RunConfig:
    """Load, override and validate a run config; raises :class:`ConfigError` with every problem.

    ``resolve`` also validates each named component (needs the plugin registries).
    """
    label = None
    if isinstance(source, RunConfig):
        data = source.model_dump(mode="json", exclude_none=True)
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        label = str(source)
        data = read_config_file(source)
    overrides = list(overrides)
    if overrides:
        data = apply_overrides(data, overrides)
    errors: list[ErrorItem] = []
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        errors.extend(errors_from_validation(exc, RunConfig))
        config = None
    if resolve:
        errors.extend(resolve_components(data, config))
    if errors:
        raise ConfigError(errors, source=label)
    assert config is not None
    return config


# --------------------------------------------------------------------------- components


def _check_component(
    kind: str,
    path: str,
    raw: Any,
    section: ComponentSection | None,
    own_keys: frozenset[str] = frozenset({"name"}),
) -> list[ErrorItem]:
    """Validate one component reference: its name against the registry, its fields against the
    component's Config. Works from the raw dict so that errors show even when other sections fail."""
    from lladapt.plugin_manager import get_registry

    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        return []  # the structural pass reported it
    registry = get_registry(kind)
    try:
        cls = registry.get(raw["name"])
    except UnknownComponentError as exc:
        msg = str(exc)
        return [ErrorItem(f"{path}.name", msg)]
    fields = {k: v for k, v in raw.items() if k not in own_keys}
    try:
        options = cls.Config.model_validate(fields)
    except ValidationError as exc:
        return errors_from_validation(exc, cls.Config, prefix=path.split("."))
    if section is not None:
        section._options = options
    return []


def _items(raw: Any) -> list[Any]:
    if raw is None:
        return []
    return [raw] if isinstance(raw, (str, dict)) else list(raw) if isinstance(raw, list) else []


def resolve_components(data: Mapping[str, Any], config: RunConfig | None) -> list[ErrorItem]:
    """Check every named component of a config; attach each validated ``Config``."""
    from lladapt.plugin_manager import get_registry

    errors: list[ErrorItem] = []
    for key, kind in (("adapter", "adapter"), ("placement", "placement")):
        if data.get(key) is not None:
            own = AdapterSection._own_keys if key == "adapter" else frozenset({"name"})
            errors += _check_component(kind, key, data[key], getattr(config, key, None), own)
    ref_keys = frozenset({"name", "split", "limit"})
    for section, key in (("data", "train"), ("eval", "datasets")):
        raw_section = data.get(section) if isinstance(data.get(section), Mapping) else {}
        parsed = getattr(getattr(config, section, None), key, None) or []
        for i, raw in enumerate(_items(raw_section.get(key))):
            ref = parsed[i] if i < len(parsed) else None
            errors += _check_component("dataset", f"{section}.{key}.{i}", raw, ref, ref_keys)
    for section, key, kind in (
        ("data", "template", "prompt_template"),
        ("eval", "parser", "answer_parser"),
        ("model", "backbone", "backbone"),
    ):
        raw_section = data.get(section)
        name = raw_section.get(key) if isinstance(raw_section, Mapping) else None
        if isinstance(name, str):
            try:
                get_registry(kind).canonical(name)
            except UnknownComponentError as exc:
                errors.append(ErrorItem(f"{section}.{key}", str(exc)))
    return errors
