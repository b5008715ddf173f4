"""Loading a run config: YAML/JSON files, ``--set`` overrides, pydantic validation, and the
validation of each named component's fields against that component's own ``Config``. Every
problem is collected in one pass and raised as one :class:`~lladapt.ConfigError`, each under its
dotted path, with "did you mean" for misspelled keys and names."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lladapt.common.errors import ConfigError, ErrorItem, UnknownComponentError
from lladapt.components.interfaces import ComponentConfig
from lladapt.config.sections import AdapterSection, ComponentSection, RunConfig
from lladapt.registry import did_you_mean


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
        kind = err["type"]
        # pydantic's own steps (union members "list[str]", validators "function-after[...]") out;
        # an unknown key is the last step whatever its name (a key may be "[")
        keep = len(err["loc"]) - 1 if kind == "extra_forbidden" else len(err["loc"])
        loc = [p for p in err["loc"][:keep] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
        loc += list(err["loc"][keep:])
        path = _dotted([*prefix, *loc])
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
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", source=str(path)) from None
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
    from lladapt.components.plugin_manager import get_registry

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
    from lladapt.components.plugin_manager import get_registry

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
