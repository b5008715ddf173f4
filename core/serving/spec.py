"""What to serve: the base model, and each adapter's name, folder and prompt template, read from
what the user names on the command line: run folders (``config.json`` + ``adapter/``), adapter
folders (with ``--model``), a YAML file mapping names to such folders, or a run config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lladapt.common.errors import LladaptError
from lladapt.config import ModelSection, RunConfig, load_config

__all__ = ["BASE_NAME", "ServedAdapter", "ServeSpec", "read_target", "serve_spec"]

#: the name the base model (no adapter) is served under.
BASE_NAME = "base"
RUN_CONFIG = "config.json"
RUN_ADAPTER = "adapter"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class ServedAdapter:
    """One adapter to serve: its folder and the prompt template its run trained with."""

    folder: Path
    template: str


@dataclass
class ServeSpec:
    """The base model, the template of requests to the base, and the adapters by name."""

    model: ModelSection
    template: str = "alpaca"
    adapters: dict[str, ServedAdapter] = field(default_factory=dict)


def read_target(path: str | Path, adapter: str | Path | None = None) -> tuple[RunConfig, Path | None]:
    """A run folder (its ``config.json``, its ``adapter/`` unless ``adapter`` is given) or a run
    config file (its ``adapter.path`` unless ``adapter`` is given): the config and the adapter
    folder to load (None: the base model, or the config's adapter untrained)."""
    path = Path(path)
    if path.is_dir():
        if not (path / RUN_CONFIG).is_file():
            raise LladaptError(f"'{path}' is a folder without {RUN_CONFIG}: give a run folder "
                               "(config.json + adapter/) or a config file")
        config = load_config(path / RUN_CONFIG)
        default = path / RUN_ADAPTER if (path / RUN_ADAPTER).is_dir() else None
    elif path.is_file():
        config = load_config(path)
        default = Path(config.adapter.path) if config.adapter and config.adapter.path else None
    else:
        raise LladaptError(f"'{path}' does not exist: give a run folder or a config file")
    chosen = Path(adapter) if adapter is not None else default
    if chosen is not None and not chosen.is_dir():
        raise LladaptError(f"adapter folder '{chosen}' does not exist")
    return config, chosen


def _is_adapter_folder(path: Path) -> bool:
    return any((path / name).is_file() for name in ADAPTER_FILES)


def _entries(targets: Sequence[str | Path]) -> list[tuple[str | None, Path]]:
    """(name or None, folder) for each target; a YAML file contributes its name -> folder pairs
    (folders relative to the file)."""
    entries: list[tuple[str | None, Path]] = []
    for target in targets:
        path = Path(target)
        if path.suffix in (".yaml", ".yml") and path.is_file():
            import yaml

            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            if not isinstance(data, Mapping) or not all(isinstance(v, str) for v in data.values()):
                raise LladaptError(f"{path}: expected a mapping of adapter name -> folder, e.g. "
                                   "'lora: runs/lora'")
            entries += [(str(name), (path.parent / folder)) for name, folder in data.items()]
        else:
            entries.append((None, path))
    return entries


def _name_of(folder: Path) -> str:
    return folder.resolve().parent.name if folder.name == RUN_ADAPTER else folder.resolve().name


def serve_spec(targets: Sequence[str | Path], *, model: str | None = None,
               template: str | None = None) -> ServeSpec:
    """The :class:`ServeSpec` of ``lladapt serve TARGET...``: every run must share one base model
    (``--model`` overrides it, and is needed when only bare adapter folders are given)."""
    adapters: dict[str, ServedAdapter] = {}
    models: dict[str, ModelSection] = {}
    for name, folder in _entries(targets):
        if not folder.is_dir():
            raise LladaptError(f"'{folder}' is not a folder: give run folders, adapter folders or a YAML file")
        if (folder / RUN_CONFIG).is_file():
            config, adapter_dir = read_target(folder)
            if adapter_dir is None:
                raise LladaptError(f"run folder '{folder}' has no {RUN_ADAPTER}/ (has it finished training?)")
            models[str(folder)] = config.model
            entry = ServedAdapter(adapter_dir, config.data.template)
        elif _is_adapter_folder(folder):
            entry = ServedAdapter(folder, template or "alpaca")
        else:
            raise LladaptError(f"'{folder}' is neither a run folder (config.json + adapter/) nor an "
                               "adapter folder (adapter_config.json + weights)")
        name = name or _name_of(folder)
        if name == BASE_NAME or name in adapters:
            raise LladaptError(
                f"two adapters would be served as '{name}'" if name in adapters else
                f"'{BASE_NAME}' names the base model; serve the adapter in '{folder}' under another name"
            )
        adapters[name] = entry
    return ServeSpec(_one_model(models, model), template or _common_template(adapters), adapters)


def _one_model(models: Mapping[str, ModelSection], model: str | None) -> ModelSection:
    if model is not None:
        return ModelSection(source=model)
    if not models:
        raise LladaptError("no base model: give --model SOURCE, or run folders (their config.json names it)")
    first, *others = models.items()
    for where, section in others:
        if section != first[1]:
            raise LladaptError(
                f"the runs in '{first[0]}' and '{where}' were trained on different base models "
                f"('{first[1].source}' and '{section.source}'); one server serves one base model "
                "(give --model to choose it)"
            )
    return first[1]


def _common_template(adapters: Mapping[str, ServedAdapter]) -> str:
    names = {a.template for a in adapters.values()}
    return names.pop() if len(names) == 1 else "alpaca"
