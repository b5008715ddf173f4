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


#: the folder that holds the checkout (``../shared`` is looked for here).
CHECKOUT_PARENT = Path(__file__).resolve().parents[2]


def shared_dir() -> Path | None:
    """The shared assets folder: ``LLADAPT_SHARED_DIR`` when set (whether or not it exists: a
    wrong setting must not pass for "no assets"), else ``../shared`` beside the checkout or beside
    the working directory; None when there is no such folder at all."""
    env = os.environ.get("LLADAPT_SHARED_DIR")
    if env:
        return Path(env)
    for path in (CHECKOUT_PARENT / "shared", Path.cwd().parent / "shared"):
        if path.is_dir():
            return path
    return None


def shared_asset(*parts: str) -> Path | None:
    """``parts`` inside the shared assets folder. None when there is no shared folder at all (a
    plain checkout); a shared folder that lacks the file is an error naming it, never a None."""
    base = shared_dir()
    if base is None:
        return None
    path = base.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the shared assets folder {base} lacks it")
    return path


def stories260k_dir() -> Path | None:
    """The real 260K-parameter LLaMA in the shared assets (None without any shared assets)."""
    config = shared_asset("models", "stories260k", "config.json")
    return config.parent if config is not None else None


def paper_data_dir() -> Path | None:
    """The paper's datasets in the shared assets (None without any shared assets)."""
    return shared_asset("data", "llm-adapters")
