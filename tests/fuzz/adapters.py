"""Adapter folders: random bytes, truncated files, tensors of wrong shapes, dtypes and names,
edited metadata and configs, missing files; loaded by ``lladapt eval --adapter DIR``. A folder that
still loads is evaluated (one item, one token)."""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.cli_property import Outcome, run_cli
from tests.fuzz.values import junk, paths_of

WEIGHTS, CONFIG = "adapter_model.safetensors", "adapter_config.json"
MUTATIONS = ["bytes", "truncate", "shape", "dtype", "drop", "extra", "rename", "meta", "meta", "meta_text",
             "no_meta", "config", "config", "config_junk", "no_config", "no_weights"]


def make_pristine(root: Path, model: str) -> dict[str, Path]:
    """A LoRA folder (PEFT's format) and a series folder (lladapt's) for ``model``, with random
    weights."""
    import torch

    from lladapt.api import build
    from lladapt.config import load_config

    folders = {}
    for name, adapter, placement in (("lora", {"name": "lora", "r": 2}, None),
                                     ("series", {"name": "series", "bottleneck_size": 4}, "mlp")):
        built = build(load_config({"model": model, "adapter": adapter, "placement": placement}))
        torch.manual_seed(0)
        with torch.no_grad():
            for p in built.model.trainable_parameters():
                p.normal_(0, 0.02)
        folders[name] = built.model.save_adapter(root / name)
    return folders


@dataclass(frozen=True)
class AdapterCase:
    base: str
    mutations: tuple[tuple[str, Any], ...]  # (kind, the drawn details)


@st.composite
def adapter_cases(draw: st.DrawFn) -> AdapterCase:
    kinds = draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3))
    details = []
    for kind in kinds:
        detail: Any = None
        if kind == "bytes":
            detail = draw(st.binary(max_size=300))
        elif kind == "truncate":
            detail = (draw(st.sampled_from([WEIGHTS, CONFIG])), draw(st.floats(min_value=0, max_value=0.999)))
        elif kind in ("shape", "dtype", "drop", "rename", "extra"):
            detail = (draw(st.integers(min_value=0, max_value=10**6)),
                      draw(st.sampled_from(["int8", "bool", "float16", "float64", "int64", "bfloat16"])),
                      draw(st.sampled_from([(0,), (1,), (3, 5), (2, 2, 2), (1000,)])))
        elif kind in ("meta", "config"):
            detail = draw(st.integers(min_value=0, max_value=2**32))
        elif kind == "meta_text":
            detail = draw(st.sampled_from(["", "{", "null", "[]", "💥", '{"adapter": null}']))
        elif kind == "config_junk":
            detail = draw(st.one_of(junk(), st.binary(max_size=40)))
        details.append((kind, detail))
    return AdapterCase(draw(st.sampled_from(["lora", "series"])), tuple(details))


def _seeded_edit(data: Any, seed: int) -> Any:
    """One to three edits of ``data`` at random keys, reproducible from ``seed`` (drawn by
    hypothesis): values replaced by odd ones, keys removed."""
    import random


    rng = random.Random(seed)
    data = json.loads(json.dumps(data))
    paths = [p for p in paths_of(data) if p]
    for _ in range(rng.randint(1, 3)):
        if not paths:
            break
        path = rng.choice(paths)
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        choice = rng.choice([None, -1, 0, 10**9, 1.5, "💥", "LORA", "PREFIX_TUNING", [], {}, True, "lora", "series",
                             {"path": "x"}, [{"path": "model.layers.0.mlp.down_proj"}], "remove"])
        if choice == "remove":
            del parent[path[-1]]
        else:
            parent[path[-1]] = choice
        paths = [p for p in paths_of(data) if p]
    return data


def _mutate(folder: Path, kind: str, detail: Any) -> None:
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    weights, config = folder / WEIGHTS, folder / CONFIG
    if kind == "bytes":
        weights.write_bytes(detail)
    elif kind == "truncate":
        target = folder / detail[0]
        if target.is_file():
            data = target.read_bytes()
            target.write_bytes(data[: int(len(data) * detail[1])])
    elif kind in ("no_config", "no_weights"):
        (config if kind == "no_config" else weights).unlink(missing_ok=True)
    elif kind == "config_junk":
        config.write_bytes(detail if isinstance(detail, bytes) else json.dumps(detail).encode())
    elif kind == "config":
        with contextlib.suppress(OSError, ValueError):  # no config, or not JSON any more: nothing to edit
            config.write_text(json.dumps(_seeded_edit(json.loads(config.read_text()), detail)))
    else:
        try:
            tensors = load_file(str(weights))
            with safe_open(str(weights), "pt") as handle:
                metadata = dict(handle.metadata() or {})
        except Exception:  # the weights were broken by an earlier mutation: nothing to edit
            return
        keys = sorted(tensors)
        if kind in ("shape", "dtype", "drop", "rename") and keys:
            key = keys[detail[0] % len(keys)]
            if kind == "shape":
                tensors[key] = torch.zeros(detail[2])
            elif kind == "dtype":
                tensors[key] = tensors[key].to(getattr(torch, detail[1]))
            elif kind == "drop":
                del tensors[key]
            else:
                tensors[key.replace("base_model.model.", "", 1) + ".x"] = tensors.pop(key)
        elif kind == "extra":
            tensors[f"base_model.model.extra.{detail[0]}"] = torch.zeros(detail[2])
        elif kind == "meta":
            try:
                meta = json.loads(metadata.get("lladapt", "{}"))
            except ValueError:  # an earlier mutation wrote text that is not JSON
                meta = {}
            metadata["lladapt"] = json.dumps(_seeded_edit(meta, detail))
        elif kind == "meta_text":
            metadata["lladapt"] = detail
        elif kind == "no_meta":
            metadata.pop("lladapt", None)
        save_file(tensors, str(weights), metadata=metadata)


def run_adapter_case(case: AdapterCase, workdir: Path, model: str, pristine: dict[str, Path]) -> Outcome:
    folder = workdir / "adapter"
    shutil.copytree(pristine[case.base], folder)
    for kind, detail in case.mutations:
        _mutate(folder, kind, detail)
    config = {"model": model, "output_dir": str(workdir / "out"),
              "eval": {"datasets": [{"name": "arith", "limit": 1}], "max_new_tokens": 1}}
    path = workdir / "config.json"
    path.write_text(json.dumps(config))
    return run_cli("adapter", ["eval", str(path), "--adapter", str(folder)], [workdir])
