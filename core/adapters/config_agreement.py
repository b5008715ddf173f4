"""One adapter folder, one reading: ``adapter_config.json`` must say what the weights' metadata
says, on everything that changes the adapter's outputs.

lladapt rebuilds an adapter from the metadata in ``adapter_model.safetensors``; PEFT reads
``adapter_config.json``. A folder whose config was edited (``lora_alpha`` 8 -> 64, another
``peft_type``) would load as one adapter in lladapt and as another in PEFT, so loading refuses it,
naming each key with both values. The config it is compared with is the one lladapt writes for the
adapter as loaded (:func:`lladapt.adapters.files.export`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lladapt.common.errors import AdapterError
from lladapt.common.nested import differences

__all__ = ["IGNORED_KEYS", "check_agreement", "disagreements"]

#: top-level keys that change no output: where the base model was found, bookkeeping, settings
#: used only while training or initialising.
IGNORED_KEYS = frozenset({
    # PEFT's
    "base_model_name_or_path", "revision", "inference_mode", "task_type", "peft_version",
    "auto_mapping", "lora_dropout", "init_lora_weights",
    # lladapt's metadata (the folder format of adapters without a PEFT equivalent)
    "lladapt_version", "run_id", "base_model", "format_version", "adapter_config",
})


def _empty(value: Any) -> bool:
    """A value that says "not used": PEFT reads a missing key as its default, which is this."""
    if value is None or value is False:
        return True
    return isinstance(value, (str, list, dict)) and value in ("", "none", [], {})


def _normal(value: Any) -> Any:
    """Lists of names compare as sets (``target_modules`` in any order)."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return sorted(value)
    return value


def disagreements(expected: Mapping[str, Any], found: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, expected, found)`` for each output-changing key on which ``found`` (the file) differs
    from ``expected`` (what the metadata gives)."""
    return [
        (key, a, b) for key, a, b in differences(_normal(dict(expected)), _normal(dict(found)))
        if key.split(".")[0] not in IGNORED_KEYS and not (_empty(a) and _empty(b))
    ]


def check_agreement(directory: str | Path, expected: Mapping[str, Any], found: Mapping[str, Any] | None,
                    *, config_file: str, weights_file: str) -> None:
    """Refuse a folder whose ``config_file`` disagrees with its weights' metadata (``expected``)."""
    if found is None:
        return
    diffs = disagreements(expected, found)
    if not diffs:
        return
    listed = "; ".join(f"{key}: {a!r} in the metadata, {b!r} in {config_file}" for key, a, b in diffs)
    raise AdapterError(
        f"'{directory}': {config_file} disagrees with the metadata of {weights_file} "
        f"({listed}); lladapt reads the metadata and PEFT reads {config_file}, so the folder would "
        f"load as two different adapters. Rewrite {config_file} from the metadata with "
        f"`lladapt adapter fix-config {directory}`, or delete it"
    )
