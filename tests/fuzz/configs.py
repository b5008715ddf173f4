"""Run configs and sweep specs: YAML or JSON of wrong types, unknown keys, extreme numbers and
unicode, edits of a valid file, raw bytes that are not YAML; checked with ``lladapt validate``
(configs, on the meta device) and ``lladapt sweep --dry-run`` (specs). Neither writes anything."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from tests.fuzz.cli_property import Outcome, run_cli
from tests.fuzz.values import UNICODE_TEXT, edited, junk

SECTION_KEYS = ["model", "adapter", "placement", "data", "train", "eval", "output_dir", "name", "r", "alpha",
                "limit", "max_steps", "learning_rate", "batch_size", "modules", "layers", "adaptr", "trian"]


def base_config(model: str, out: str) -> dict[str, Any]:
    return {
        "model": model, "adapter": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.05},
        "placement": {"name": "modules", "modules": ["q", "v"]},
        "data": {"train": [{"name": "arith", "limit": 8}], "cutoff_len": 64, "val_set_size": 0},
        "train": {"max_steps": 2, "batch_size": 4, "micro_batch_size": 2, "learning_rate": 0.01,
                  "save_steps": 1, "precision": "fp32"},
        "eval": {"datasets": [{"name": "arith", "split": "test"}], "limit": 2, "max_new_tokens": 4},
        "output_dir": out,
    }


def base_sweep(model: str, out: str) -> dict[str, Any]:
    base = base_config(model, "unused")
    del base["output_dir"]
    return {"name": "fuzz", "output_dir": out, "base": base,
            "grid": {"adapter": {"lora": {"adapter": {"name": "lora", "r": 4}},
                                 "series": {"adapter": {"name": "series", "bottleneck_size": 8}, "placement": "mlp"}},
                     "train.seed": [1, 2]},
            "budget": None, "resources": {"num_cpus": 1}}


@dataclass(frozen=True)
class TextCase:
    """A file's content (``data``: a structure to dump, or ``raw`` bytes), its suffix, and
    ``--set`` overrides."""

    data: Any
    raw: bytes | None
    suffix: str
    overrides: tuple[str, ...]


def _dump(data: Any, suffix: str) -> bytes:
    if suffix == ".json":
        return json.dumps(data, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode("utf-8", "surrogatepass")


def text_cases(base: dict[str, Any]) -> st.SearchStrategy[TextCase]:
    """Mostly edits of ``base``; some any structure, some raw bytes, some ``--set`` overrides."""
    raw = st.one_of(st.binary(max_size=200), st.sampled_from([b"", b"\xef\xbb\xbf", b"a: [1, 2", b"{", b"- - -",
                                                                 b"\tmodel: x", b"model: !!python/object:os.system x",
                                                                 b"&a [*a]", b"\xff\xfe\x00"]))
    override = st.builds(lambda k, v: f"{k}={v}", st.sampled_from(SECTION_KEYS + ["train.max_steps", "adapter.r",
                                                                                   "data.train.0.limit"]),
                         st.one_of(UNICODE_TEXT, st.sampled_from(["[", "{a: 1}", "-1", "1e400", "null"])))
    return st.builds(
        TextCase,
        data=st.one_of(edited(base, SECTION_KEYS), edited(base, SECTION_KEYS), edited(base, SECTION_KEYS, 6), junk()),
        raw=st.one_of(st.none(), st.none(), st.none(), raw),
        suffix=st.sampled_from([".yaml", ".yaml", ".json", ".yml"]),
        overrides=st.lists(override, max_size=2).map(tuple) | st.just(()),
    )


def write_case(case: TextCase, path: Path) -> Path:
    path = path.with_suffix(case.suffix)
    path.write_bytes(case.raw if case.raw is not None else _dump(case.data, case.suffix))
    return path


def run_config_case(case: TextCase, workdir: Path, command: str = "validate") -> Outcome:
    path = write_case(case, workdir / "config")
    sets = [x for o in case.overrides for x in ("--set", o)]
    return run_cli("config", [command, str(path), *sets], [workdir])


def run_sweep_case(case: TextCase, workdir: Path) -> Outcome:
    path = write_case(case, workdir / "sweep")
    sets = [x for o in case.overrides for x in ("--set", o)]
    return run_cli("sweep", ["sweep", str(path), "--dry-run", *sets], [workdir])
