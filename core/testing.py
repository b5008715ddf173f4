"""Helpers for tests, lladapt's own and plugin authors': tiny random models of each built-in
family, built from configs in code (no download), and the location of the shared test assets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: tiny architectures, one per built-in backbone family: 2 layers, hidden 64, 4 heads (2 key/value
#: heads on llama, to exercise grouped-query attention), vocabulary 128.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": dict(
        model_type="llama", hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=128, max_position_embeddings=128,
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    ),
    "bloom": dict(
        model_type="bloom", hidden_size=64, n_layer=2, n_head=4, vocab_size=128,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    ),
    "opt": dict(
        model_type="opt", hidden_size=64, ffn_dim=96, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=128, max_position_embeddings=128, word_embed_proj_dim=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    ),
    "gptj": dict(
        model_type="gptj", n_embd=64, n_inner=96, n_layer=2, n_head=4, rotary_dim=8,
        vocab_size=128, n_positions=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    ),
}

FAMILIES: tuple[str, ...] = tuple(TINY_CONFIGS)


def tiny_config(family: str, **overrides: Any):
    """A transformers config of a tiny model of ``family`` (llama, bloom, opt, gptj)."""
    from transformers import AutoConfig

    kwargs = {**TINY_CONFIGS[family], **overrides}
    return AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)


def tiny_model(family: str, seed: int = 0, **overrides: Any):
    """A tiny randomly initialised causal LM of ``family`` in eval mode, float32, on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, **overrides), dtype=torch.float32)
    return model.eval()


def shared_dir() -> Path | None:
    """The shared assets folder (``LLADAPT_SHARED_DIR``, else ``../shared`` beside the checkout)."""
    env = os.environ.get("LLADAPT_SHARED_DIR")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [p / "shared" for p in here.parents[:4]]
    candidates.append(Path.cwd().parent / "shared")
    for path in candidates:
        if (path / "models").is_dir() or (path / "data").is_dir():
            return path
    return None


def stories260k_dir() -> Path | None:
    """The real 260K-parameter LLaMA in the shared assets, or None if they are absent."""
    base = shared_dir()
    path = base / "models" / "stories260k" if base else None
    return path if path is not None and (path / "config.json").is_file() else None


def paper_data_dir() -> Path | None:
    """The paper's datasets in the shared assets, or None if they are absent."""
    base = shared_dir()
    path = base / "data" / "llm-adapters" if base else None
    return path if path is not None and path.is_dir() else None
