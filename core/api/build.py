"""The model of a run: the base model loaded and the configured adapter attached (or a saved one
loaded), and the check that an adapter about to be evaluated has been trained."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lladapt.common.errors import LladaptError
from lladapt.config import RunConfig, load_config

if TYPE_CHECKING:  # pragma: no cover
    from lladapt.models.loading import LoadedModel

__all__ = ["Built", "adapter_folder", "as_config", "build", "check_adapter_is_trained"]


@dataclass
class Built:
    """A loaded base model with its adapter attached."""

    loaded: LoadedModel
    model: Any  # lladapt.adapters.model.AdaptedModel, or the bare base model when no adapter is set


def as_config(config: str | Path | Mapping[str, Any] | RunConfig, overrides: Iterable[str] = ()) -> RunConfig:
    if isinstance(config, RunConfig) and not overrides:
        return config
    return load_config(config, overrides)


def build(config: RunConfig, adapter_dir: str | Path | None = None,
          echo: Callable[[str], None] = lambda _: None) -> Built:
    """Load the base model and tokenizer, attach the configured adapter (base frozen); with
    ``adapter_dir`` (else ``adapter.path``), load the adapter saved there (lladapt's or PEFT's;
    a run folder's or a checkpoint's ``adapter/``, saying so)."""
    from lladapt.models.loading import load_model

    loaded = load_model(config.model)
    model = loaded.model
    adapter_dir = adapter_dir or (config.adapter.path if config.adapter is not None else None)
    if adapter_dir is not None:
        from lladapt.adapters.model import load_adapter

        folder = adapter_folder(adapter_dir, echo)
        try:
            model = load_adapter(model, loaded.layout, folder)
        except LladaptError as exc:  # a config or placement error from the folder's metadata: name it
            if str(folder) in str(exc):
                raise
            raise _named(exc, f"the adapter in '{folder}': {exc}") from None
    elif config.adapter is not None:
        from lladapt.adapters.model import attach_from_config

        model = attach_from_config(model, loaded.layout, config.adapter, config.placement)
    return Built(loaded, model)


def _named(exc: LladaptError, message: str) -> LladaptError:
    error = LladaptError(message)
    error.exit_code = exc.exit_code
    return error


def adapter_folder(path: str | Path, echo: Callable[[str], None] = lambda _: None) -> Path:
    """The adapter folder ``path`` names: itself, or the ``adapter/`` of a run folder (or of a
    checkpoint) given instead, which is said."""
    from lladapt.api.run_folder import ADAPTER_DIR

    path = Path(path)
    if not path.is_dir():
        raise LladaptError(f"adapter folder '{path}' does not exist (--adapter / adapter.path)")
    weights = ("adapter_model.safetensors", "adapter_model.bin")  # lladapt's and PEFT's, the paper code's
    inner = path / ADAPTER_DIR
    if not any((path / name).is_file() for name in weights) and any((inner / name).is_file() for name in weights):
        echo(f"'{path}' is a run folder: evaluating its adapter, {inner}")
        return inner
    return path


def check_adapter_is_trained(config: RunConfig, adapter_dir: str | Path | None, training: bool) -> None:
    """Evaluating an adapter means evaluating trained weights, unless the user asks otherwise."""
    if (config.adapter is None or training or adapter_dir is not None or config.adapter.path is not None
            or config.eval.untrained_adapter or not config.eval.datasets):
        return
    raise LladaptError(
        f"adapter '{config.adapter.name}' would be evaluated with its initial (untrained) weights: "
        "pass --adapter DIR (or set adapter.path) to evaluate a trained adapter, set data.train to "
        "train one first, or set eval.untrained_adapter=true (lladapt eval --untrained-adapter) to "
        "evaluate it untrained on purpose"
    )
