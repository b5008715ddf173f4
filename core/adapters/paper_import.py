"""Import checkpoints written by the paper's code (AGI-Edgerunners/LLM-Adapters, a PEFT 0.3 fork).

Such a folder holds ``adapter_config.json`` (``peft_type`` ``LORA`` or ``BOTTLENECK``) and
``adapter_model.bin``, a pickled state dict with keys like
``base_model.model.model.layers.0.mlp.down_proj.adapter_down.weight`` (``adapter_up.weight``,
``adapter_scaling`` when the scale was learned) or ``...q_proj.lora_A.weight`` / ``lora_B``.
The file is read with ``torch.load(weights_only=True)``: tensors only, no code runs.

The tensors keep their keys in lladapt (its series/parallel/LoRA adapters hang ``adapter_down``,
``adapter_up``, ``adapter_scaling``, ``lora_A``, ``lora_B`` on the target Linear), so importing is
translating the config and finding the sites:

* ``BOTTLENECK`` with ``use_parallel_adapter``: the ``parallel`` adapter beside each target;
  otherwise ``series`` with the code's per-module mode: input on the MLP's input projections
  (``mh_adapter``: gate/up, dense_h_to_4h, fc_in, fc1), output elsewhere (``output_adapter``);
  ``use_adapterp`` only changed the default targets. ``scaling: "learned"`` is ``learn_scale``;
  ``init_weights`` ``mam_adapter`` is ``init: mam``.
* ``LORA``: the ``lora`` adapter (r, lora_alpha, lora_dropout); the fork's merged-qkv variant
  (``enable_lora``) is refused with a clear error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from lladapt.adapters.build import build_adapter
from lladapt.adapters.files import (
    CONFIG_FILE,
    PAPER_WEIGHTS_FILE,
    PEFT_PREFIX,
    SavedAdapter,
    from_peft_keys,
    read_json_object,
)
from lladapt.adapters.sites import site_for_path
from lladapt.common.errors import AdapterError, ConfigError
from lladapt.components.interfaces import Layout, Site
from lladapt.components.plugin_manager import get_registry

__all__ = ["bottleneck_options", "read_paper_checkpoint", "read_paper_state"]

_BOTTLENECK_SUFFIX = ".adapter_down.weight"


def read_paper_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a paper ``adapter_model.bin`` (``weights_only``: no code is unpickled)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise AdapterError(f"no such file '{path}'") from None
    except Exception as exc:  # an unsafe pickle or a corrupt file: never fall back to unpickling
        raise AdapterError(f"'{path}' is not a plain tensor state dict: {exc}") from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise AdapterError(f"'{path}' does not hold a state dict of named tensors")
    from_peft_keys(state, f"'{path}'")  # every key must carry PEFT's prefix
    return dict(state)


def bottleneck_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """The lladapt adapter section (``name`` + fields) for the fork's ``BottleneckConfig``."""
    scaling = config.get("scaling", 1.0)
    learned = isinstance(scaling, str)
    if learned and scaling != "learned":
        raise AdapterError(f"scaling '{scaling}': the paper's code knows a float or 'learned'")
    init = config.get("init_weights", "bert")
    return {
        "name": "parallel" if config.get("use_parallel_adapter") else "series",
        "bottleneck_size": config.get("bottleneck_size", 256),
        "non_linearity": config.get("non_linearity", "tanh"),
        "dropout": config.get("adapter_dropout", 0.0),
        "init": "mam" if init == "mam_adapter" else init,
        "scale": 1.0 if learned else float(scaling),
        "learn_scale": learned,
    }


def _bottleneck_sites(
    adapter: Any, state: Mapping[str, torch.Tensor], layout: Layout
) -> list[Site]:
    sites = []
    for key in sorted(state):
        if key.endswith(_BOTTLENECK_SUFFIX):
            path = key[len(PEFT_PREFIX): -len(_BOTTLENECK_SUFFIX)]
            site = site_for_path(layout, path, "parallel")
            mode = adapter.default_mode(site.role)
            sites.append(Site(path=path, layer=site.layer, role=site.role, mode=mode))  # type: ignore[arg-type]
    return sites


def read_paper_checkpoint(
    layout: Layout, path: str | Path, config: Mapping[str, Any] | None = None
) -> SavedAdapter:
    """The adapter of a paper-code checkpoint, for a base model of ``layout`` (attach it with
    :func:`lladapt.adapters.model.attach_saved`, or load it in one step with
    :func:`lladapt.adapters.model.load_paper_checkpoint`).

    ``path`` is the checkpoint folder (``adapter_config.json`` + ``adapter_model.bin``) or the
    ``.bin`` file; ``config`` replaces the folder's ``adapter_config.json`` when given.
    """
    path = Path(path)
    weights = path / PAPER_WEIGHTS_FILE if path.is_dir() else path
    if config is None:
        config_path = weights.parent / CONFIG_FILE
        config = read_json_object(config_path)
        if config is None:
            raise AdapterError(
                f"'{config_path}' is missing: it says which adapter the checkpoint holds "
                "(pass config= to give it)"
            )
    state = read_paper_state(weights)
    peft_type = str(config.get("peft_type", "")).upper()
    try:
        if peft_type == "BOTTLENECK":
            adapter = build_adapter(bottleneck_options(config))
            sites = _bottleneck_sites(adapter, state, layout)
            module_state = from_peft_keys(state, f"'{weights}'")
        elif peft_type == "LORA":
            lora = get_registry("adapter").get("lora")
            options, sites = lora.sites_from_peft(config, state, layout)
            adapter = lora(options)
            module_state = lora.from_peft(config, state)
        else:
            raise AdapterError(
                f"'{weights}': peft_type '{config.get('peft_type')}' is not one lladapt imports "
                "from the paper's code (BOTTLENECK, LORA)"
            )
    except (ValidationError, ConfigError) as exc:
        raise AdapterError(f"'{weights}': its adapter_config.json does not fit lladapt: {exc}") from None
    if not sites:
        raise AdapterError(f"'{weights}' holds no adapter tensors (keys: {', '.join(list(state)[:5])})")
    return SavedAdapter(adapter, None, sites, module_state, str(weights))
