"""The adapter folder: ``adapter_config.json`` + ``adapter_model.safetensors``.

Layout of a folder lladapt writes:

* ``adapter_model.safetensors``: the adapter's tensors. Keys are PEFT's: ``base_model.model.``
  followed by the tensor's path in the base model (``...q_proj.lora_A.weight``,
  ``...mlp.down_proj.adapter_down.weight``: the paper code's keys too), or whatever the adapter's
  ``to_peft`` returns. The file's metadata (``__metadata__``) holds ``format: pt`` and
  ``lladapt``: a JSON object with the format version, the run id, the adapter's name and Config,
  the placement, the resolved sites and a description of the base model. That metadata is what
  lladapt reads back.
* ``adapter_config.json``: for an adapter with a PEFT equivalent (``to_peft``; LoRA, prefix),
  PEFT's own config, so that ``peft.PeftModel.from_pretrained(base, folder)`` loads the folder;
  otherwise the same JSON object as the metadata, for people to read.

Writing goes to a temporary folder beside the target, then each file is renamed into place, so a
crash never leaves a half-written adapter. A folder that holds another run's adapter is not
overwritten without ``overwrite=True``.

Loading rebuilds the adapter from the metadata, attaches it at the recorded sites of a fresh base
model and copies the tensors in: outputs are bit-identical to the saved model's. Folders written
by PEFT (no lladapt metadata) load through the adapter whose ``peft_type`` matches; folders of the
paper's code (``adapter_model.bin``) through :mod:`lladapt.adapters.paper_import`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from lladapt.adapters.build import build_adapter, build_placement
from lladapt.adapters.config_agreement import check_agreement
from lladapt.common import hf_compat
from lladapt.common.errors import AdapterError, WriteError
from lladapt.common.fileio import make_dirs, write_bytes, write_text_atomic, writing
from lladapt.components.interfaces import Adapter, Layout, Placement, Site
from lladapt.components.plugin_manager import get_registry

if TYPE_CHECKING:  # pragma: no cover
    from lladapt.adapters.model import AdaptedModel

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "PAPER_WEIGHTS_FILE",
    "PEFT_PREFIX",
    "WEIGHTS_FILE",
    "SavedAdapter",
    "check_config_file",
    "copy_state",
    "export",
    "from_peft_keys",
    "load_adapter_state",
    "read_adapter",
    "read_folder",
    "read_json_object",
    "rewrite_config",
    "save_adapter",
    "to_peft_keys",
    "written_config",
]

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
#: the paper's code's weights file (a torch pickle; :mod:`lladapt.adapters.paper_import` reads it).
PAPER_WEIGHTS_FILE = "adapter_model.bin"
FORMAT = "lladapt-adapter"
FORMAT_VERSION = 1
#: PEFT's prefix of every module key in an adapter file (``PeftModel.base_model.model``).
PEFT_PREFIX = "base_model.model."


def to_peft_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Module-path keys to PEFT's (:data:`PEFT_PREFIX` in front)."""
    return {PEFT_PREFIX + key: value for key, value in state.items()}


def from_peft_keys(tensors: Mapping[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """PEFT's keys back to module paths; a key without :data:`PEFT_PREFIX` is an
    :class:`AdapterError` that names ``where`` (the file) and the first such keys."""
    bad = [key for key in tensors if not key.startswith(PEFT_PREFIX)]
    if bad:
        raise AdapterError(f"{where}: keys without the '{PEFT_PREFIX}' prefix: {', '.join(bad[:5])}")
    return {key[len(PEFT_PREFIX):]: value for key, value in tensors.items()}


# --------------------------------------------------------------------------- saving


def describe_base(model: torch.nn.Module, layout: Layout) -> dict[str, Any]:
    """What an adapter file records about its base model (checked when loading)."""
    config = getattr(model, "config", None)
    return {
        "model_type": getattr(config, "model_type", None),
        "name_or_path": hf_compat.name_or_path(model),
        "num_layers": layout.num_layers,
        "hidden_size": layout.hidden_size,
        "vocab_size": layout.vocab_size,
    }


def _metadata(adapted: AdaptedModel, tensor_format: str) -> dict[str, Any]:
    from lladapt.common.version import __version__

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "lladapt_version": __version__,
        "run_id": adapted.run_id,
        **adapted.describe(),
        "base_model": describe_base(adapted.base_model, adapted.layout),
        "tensor_format": tensor_format,
    }


def _check_overwrite(directory: Path, run_id: str, overwrite: bool) -> None:
    if overwrite or not any((directory / f).exists() for f in (CONFIG_FILE, WEIGHTS_FILE)):
        return
    try:
        meta = read_folder(directory)[0]
    except AdapterError:
        meta = None
    if meta is not None and meta.get("run_id") == run_id:
        return  # a checkpoint of this same run
    owner = f"run '{meta.get('run_id')}'" if meta else "another program"
    raise AdapterError(
        f"'{directory}' holds an adapter of {owner}, not of this run ('{run_id}'); "
        "pass overwrite=True to replace it, or save elsewhere"
    )


def _to_cpu(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in tensors.items():
        if value.device.type == "meta":
            raise AdapterError(
                f"cannot save '{key}': it is on the meta device (a model built without weights)"
            )
        out[key] = value.detach().to("cpu").contiguous().clone()
    return out


def export(adapted: AdaptedModel) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """What :func:`save_adapter` writes: the ``adapter_config.json`` object, the tensors under
    their file keys (on the CPU), and the metadata. In PEFT's format (an adapter with
    ``to_peft``) the metadata also keeps a copy of the config it was written with
    (``adapter_config``), from which ``lladapt adapter fix-config`` rewrites an edited one."""
    state = adapted.adapter_state_dict()
    to_peft = getattr(adapted.adapter, "to_peft", None)
    exported = to_peft(state) if to_peft is not None else None
    if exported is not None:
        config_json, tensors = exported
        meta = {**_metadata(adapted, "peft"), "adapter_config": config_json}
    else:
        tensors = to_peft_keys(state)
        meta = _metadata(adapted, "lladapt")
        config_json = meta
    return config_json, _to_cpu(tensors), meta


def save_adapter(adapted: AdaptedModel, directory: str | Path, *, overwrite: bool = False) -> Path:
    """Write the adapter of ``adapted`` into ``directory`` (created if missing); returns it. A
    failed write (a full disk) is a :class:`~lladapt.common.errors.WriteError` naming the file,
    and leaves ``directory`` as it was."""
    from safetensors.torch import save

    directory = Path(directory)
    _check_overwrite(directory, adapted.run_id, overwrite)
    config_json, tensors, meta = export(adapted)
    weights = save(tensors, metadata={"format": "pt", "lladapt": json.dumps(meta)})
    make_dirs(directory.parent)
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        make_dirs(tmp)
        write_bytes(tmp / WEIGHTS_FILE, weights)
        write_bytes(tmp / CONFIG_FILE, (json.dumps(config_json, indent=2, sort_keys=True) + "\n").encode())
        make_dirs(directory)
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            with writing(directory / name):
                os.replace(tmp / name, directory / name)
    except WriteError as exc:
        raise exc.moved(tmp, directory) from exc.__cause__
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def written_config(directory: str | Path) -> dict[str, Any]:
    """The ``adapter_config.json`` lladapt wrote into ``directory``, from the weights' metadata."""
    directory = Path(directory)
    meta = read_folder(directory)[0]
    if meta is None:
        raise AdapterError(f"'{directory / WEIGHTS_FILE}' holds no lladapt metadata: {CONFIG_FILE} "
                           "is the only description of this adapter, there is nothing to rewrite it from")
    if meta.get("tensor_format") == "lladapt":
        return meta
    if isinstance(meta.get("adapter_config"), dict):
        return meta["adapter_config"]
    raise AdapterError(
        f"'{directory / WEIGHTS_FILE}' was written by lladapt {meta.get('lladapt_version')}, which kept no "
        f"copy of {CONFIG_FILE} in its metadata; delete {directory / CONFIG_FILE} (lladapt reads the "
        "metadata), or load the adapter and save it again"
    )


def rewrite_config(directory: str | Path) -> Path:
    """Replace ``directory``'s ``adapter_config.json`` by the one its weights' metadata records
    (``lladapt adapter fix-config``); returns the file."""
    path = Path(directory) / CONFIG_FILE
    write_text_atomic(path, json.dumps(written_config(directory), indent=2, sort_keys=True) + "\n")
    return path


# --------------------------------------------------------------------------- reading


def read_folder(
    directory: str | Path,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, torch.Tensor]]:
    """(lladapt metadata or None, adapter_config.json or None, tensors) of an adapter folder."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    directory = Path(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        if (directory / "adapter").is_dir():
            hint = f" (a run folder? its adapter is in {directory / 'adapter'})"
        elif (directory / "checkpoints").is_dir():
            hint = (" (a run folder whose training did not finish? each checkpoint's adapter is in "
                    f"{directory / 'checkpoints'}/step-N/adapter)")
        else:
            hint = f" (an adapter folder holds {WEIGHTS_FILE} and {CONFIG_FILE}, as lladapt and PEFT write them)"
        raise AdapterError(f"'{directory}' holds no {WEIGHTS_FILE}{hint}")
    try:
        with safe_open(str(weights), "pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise AdapterError(f"'{weights}' is not a readable safetensors file: {exc}") from None
    meta = None
    if "lladapt" in header:
        try:
            meta = json.loads(header["lladapt"])
        except json.JSONDecodeError as exc:
            raise AdapterError(f"'{weights}': its lladapt metadata is not JSON: {exc}") from None
        _check_metadata(header["lladapt"], weights)
    config = read_json_object(directory / CONFIG_FILE)
    return meta, config, tensors


class _Component(BaseModel):
    model_config = ConfigDict(strict=True)
    name: str
    config: dict[str, Any] = {}


class _Metadata(BaseModel):
    """What loading reads of the metadata (lladapt writes more, which is kept as it is)."""

    model_config = ConfigDict(strict=True, extra="allow")
    adapter: _Component
    placement: _Component | None = None
    sites: list[Site]
    run_id: str | None = None
    tensor_format: Literal["lladapt", "peft"] | None = None
    base_model: dict[str, Any] | None = None


def _check_metadata(text: str, weights: Path) -> None:
    """Metadata (JSON text) that is not what lladapt writes is an :class:`AdapterError` naming the
    field."""
    try:
        _Metadata.model_validate_json(text)
    except ValidationError as exc:
        raise AdapterError(
            f"'{weights}': its lladapt metadata is not what lladapt writes ({_described(exc)}); "
            "restore the folder, or save the adapter again"
        ) from None


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when there is no such file; anything else is an
    :class:`AdapterError` naming the file."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AdapterError(f"'{path}' is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise AdapterError(f"'{path}' is not UTF-8 text (byte {exc.start})") from None
    if not isinstance(data, dict):
        raise AdapterError(f"'{path}' must hold a JSON object")
    return data


# --------------------------------------------------------------------------- loading


def _check_base(meta: Mapping[str, Any], model: torch.nn.Module, layout: Layout, where: Path) -> None:
    saved = meta.get("base_model") or {}
    here = describe_base(model, layout)
    diffs = [
        f"{key} {saved[key]!r} (here {here[key]!r})"
        for key in ("model_type", "num_layers", "hidden_size")
        if saved.get(key) is not None and saved[key] != here[key]
    ]
    if diffs:
        raise AdapterError(
            f"'{where}' was trained on another base model: " + ", ".join(diffs)
        )


def _state_from_file(adapter: Any, meta: Mapping[str, Any] | None, config: Any, tensors: dict,
                     directory: Path) -> dict:
    weights = f"'{directory / WEIGHTS_FILE}'"
    if meta is not None and meta.get("tensor_format") == "lladapt":
        return from_peft_keys(tensors, weights)
    from_peft = getattr(type(adapter), "from_peft", None)
    if from_peft is None:
        raise AdapterError(f"adapter '{adapter.name}' cannot read PEFT-format tensors (no from_peft)")
    try:
        return from_peft(config or {}, tensors)
    except AdapterError as exc:
        raise AdapterError(f"{weights}: {exc}") from None


def copy_state(adapted: AdaptedModel, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Copy ``state`` into the adapter's tensors; every key must match, with its shape (and a
    floating-point dtype where the adapter's tensor is one)."""
    own = dict(adapted.named_adapter_tensors())
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k} {tuple(state[k].shape)} (model {tuple(own[k].shape)})"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    # a float weight stored as integers or booleans would load rounded to whole numbers, silently
    wrong_dtype = [
        f"{k} {str(state[k].dtype).removeprefix('torch.')} (model {str(own[k].dtype).removeprefix('torch.')})"
        for k in sorted(set(own) & set(state))
        if own[k].is_floating_point() and not state[k].is_floating_point()
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong),
                         ("wrong dtype", wrong_dtype)):
        if items:
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            problems.append(f"{label}: {', '.join(items[:5])}{more}")
    if problems:
        raise AdapterError(f"the tensors in '{where}' do not fit this adapter: " + "; ".join(problems))
    with torch.no_grad():
        for key, tensor in own.items():
            tensor.copy_(state[key].to(dtype=tensor.dtype))


@dataclass
class SavedAdapter:
    """An adapter read from a folder, not attached yet: the adapter (built from its Config), its
    placement, the sites it was attached at, and its tensors keyed by module path (``where``
    names the file they came from, for errors)."""

    adapter: Adapter
    placement: Placement | None
    sites: list[Site]
    state: dict[str, torch.Tensor]
    where: str
    run_id: str | None = None
    #: the folder's adapter_config.json when the weights carry lladapt metadata (checked against
    #: the adapter once attached: :func:`check_config_file`), else None
    config_file: dict[str, Any] | None = None


def read_adapter(directory: str | Path, model: torch.nn.Module, layout: Layout) -> SavedAdapter:
    """The adapter saved in ``directory`` by lladapt or by PEFT (through the adapter whose
    ``peft_type`` matches), checked against the base ``model`` it is meant for."""
    directory = Path(directory)
    meta, config, tensors = read_folder(directory)
    if meta is not None:
        _check_base(meta, model, layout, directory)
        adapter = build_adapter({"name": meta["adapter"]["name"], **meta["adapter"]["config"]})
        placement = meta.get("placement")
        placement = (
            build_placement({"name": placement["name"], **placement["config"]})
            if placement else None
        )
        sites = [Site(**s) for s in meta["sites"]]
        run_id = meta.get("run_id")
    else:
        adapter_cls = _adapter_for_peft(config, directory)
        try:
            options, sites = adapter_cls.sites_from_peft(config, tensors, layout)
            adapter, placement, run_id = adapter_cls(options), None, None
        except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise AdapterError(f"'{directory / CONFIG_FILE}': not a {config.get('peft_type')} config lladapt "
                               f"can read ({_described(exc)})") from None
    state = _state_from_file(adapter, meta, config, tensors, directory)
    return SavedAdapter(adapter, placement, list(sites), state, str(directory), run_id,
                        config if meta is not None else None)


def check_config_file(adapted: AdaptedModel, directory: str | Path, config_file: dict[str, Any] | None) -> None:
    """Refuse a folder whose ``adapter_config.json`` disagrees with the metadata ``adapted`` was
    built from, on what changes the outputs (:mod:`lladapt.adapters.config_agreement`)."""
    if config_file is not None:
        check_agreement(directory, export(adapted)[0], config_file, config_file=CONFIG_FILE,
                        weights_file=WEIGHTS_FILE)


def _described(exc: Exception) -> str:
    """A config error in a few words: the first field pydantic names, or the missing key."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"{'.'.join(str(part) for part in first['loc']) or 'value'}: {first['msg']}"
    if isinstance(exc, KeyError):
        return f"no {exc}"
    return str(exc)


def _adapter_for_peft(config: Mapping[str, Any] | None, directory: Path) -> type:
    peft_type = (config or {}).get("peft_type")
    if not peft_type:
        raise AdapterError(
            f"'{directory}' has neither lladapt metadata nor a PEFT {CONFIG_FILE} with a peft_type"
        )
    registry = get_registry("adapter")
    for name in registry.names():
        cls = registry.get(name)
        if getattr(cls, "peft_type", None) == peft_type and hasattr(cls, "sites_from_peft"):
            return cls
    known = sorted(
        {getattr(registry.get(n), "peft_type", "") for n in registry.names()} - {""}
    )
    raise AdapterError(
        f"'{directory}' holds a PEFT '{peft_type}' adapter; lladapt imports {', '.join(known)}"
    )


def load_adapter_state(adapted: AdaptedModel, directory: str | Path) -> None:
    """Copy the tensors saved in ``directory`` into ``adapted`` (same adapter, same sites)."""
    directory = Path(directory)
    meta, config, tensors = read_folder(directory)
    if meta is not None:
        _check_base(meta, adapted.base_model, adapted.layout, directory)
        saved_sites = [Site(**s) for s in meta["sites"]]
        if meta["adapter"]["name"] != adapted.adapter.name or saved_sites != adapted.sites:
            raise AdapterError(
                f"'{directory}' holds a '{meta['adapter']['name']}' adapter at "
                f"{len(saved_sites)} sites; this model has '{adapted.adapter.name}' at "
                f"{len(adapted.sites)} sites. Use AdaptedModel.from_pretrained on a fresh base."
            )
        check_config_file(adapted, directory, config)
        adapted.run_id = meta.get("run_id") or adapted.run_id
    copy_state(adapted, _state_from_file(adapted.adapter, meta, config, tensors, directory), str(directory))
