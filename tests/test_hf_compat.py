"""core/hf_compat.py: both spellings of transformers' KV-cache argument (``past_key_values`` up to
5.23, ``cache`` from 5.24 on), the prompt-learning hook handing the cache over under the name the
model takes, and the third-party noise lladapt filters out."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

from lladapt import get_registry
from lladapt.adapters.model import attach_from_config
from lladapt.common import hf_compat
from lladapt.testing import tiny_model


def new_forward(input_ids=None, attention_mask=None, cache=None, inputs_embeds=None, **kwargs):
    """The signature of a transformers >= 5.24 causal LM."""


def old_forward(input_ids=None, attention_mask=None, past_key_values=None, inputs_embeds=None):
    """The signature of a transformers <= 5.23 causal LM."""


def no_cache_forward(input_ids=None, attention_mask=None, **kwargs):
    """A model that takes no cache (a catch-all ``**kwargs`` does not count)."""


@pytest.mark.parametrize(
    ("forward", "name"),
    [(new_forward, "cache"), (old_forward, "past_key_values"), (no_cache_forward, None)],
)
def test_cache_argument_is_found_under_either_name(forward, name):
    assert hf_compat.cache_argument(forward) == name


def test_missing_arguments_accepts_either_cache_name():
    needed = (hf_compat.CACHE, "attention_mask")
    assert hf_compat.missing_arguments(new_forward, needed) == []
    assert hf_compat.missing_arguments(old_forward, needed) == []
    assert hf_compat.missing_arguments(no_cache_forward, needed) == ["past_key_values (or cache)"]


@pytest.mark.parametrize("given", ["cache", "past_key_values"])
def test_take_cache_removes_both_names(given):
    sentinel = object()
    call = {"input_ids": 1, given: sentinel}
    assert hf_compat.take_cache(call) is sentinel
    assert call == {"input_ids": 1}


def test_output_cache_reads_the_field_of_this_release():
    model = tiny_model("llama").eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[5, 6, 7]]), use_cache=True)
    assert hf_compat.output_cache(out).get_seq_length() == 3


def layout_of(model):
    return get_registry("backbone").get(model.config.model_type)().layout(model.config)


@pytest.mark.parametrize("model_takes", ["cache", "past_key_values"])
@pytest.mark.parametrize("caller_passes", ["cache", "past_key_values"])
def test_prefix_hook_hands_the_cache_over_under_the_models_name(model_takes, caller_passes):
    """Whatever name the caller (generate, a user, PEFT) uses, the hook passes the prefix cache
    under the one the model's forward takes, and nothing under the other (transformers 5.24 lets
    ``cache`` win over ``past_key_values`` when both are given)."""
    model = tiny_model("llama")
    attach_from_config(model, layout_of(model), {"name": "prefix", "num_virtual_tokens": 3})
    tokens = model.lladapt_virtual_tokens
    tokens.cache_argument = model_takes
    first = tokens.rewrite(model, {"input_ids": torch.tensor([[5, 6]]), "attention_mask": torch.ones(1, 2)})
    cache = first[model_takes]
    assert cache.get_seq_length() == 3  # the prefixes, filled before the first forward
    other = {"cache": "past_key_values", "past_key_values": "cache"}[model_takes]
    assert other not in first
    # the next step finds the prefixes in the cache (3 tokens: nothing ran the model in between)
    # and widens the mask by them instead of filling a second prefix
    step = tokens.rewrite(model, {"input_ids": torch.tensor([[8]]), caller_passes: cache,
                                  "attention_mask": torch.ones(1, 1)})
    assert step[model_takes] is cache and other not in step
    assert cache.get_seq_length() == 3
    assert step["attention_mask"].shape == (1, 4)


@pytest.mark.parametrize("adapter", ["prompt", "prefix"])
def test_old_cache_name_from_a_caller_still_decodes_incrementally(adapter):
    """A user (or PEFT) passing ``past_key_values=`` on a 5.24 model gets the same next-token
    logits as a full uncached forward: the cache is found, not re-filled."""
    model = tiny_model("llama").eval()
    torch.manual_seed(0)
    adapted = attach_from_config(model, layout_of(model), {"name": adapter, "num_virtual_tokens": 4})
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        first = adapted(input_ids=ids[:, :3], use_cache=True)
        step = adapted(input_ids=ids[:, 3:], past_key_values=hf_compat.output_cache(first),
                       attention_mask=torch.ones(1, 4, dtype=torch.long), use_cache=True)
        full = adapted(input_ids=ids, use_cache=False)
    torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1], rtol=0, atol=1e-5)


KERNEL_NOTICE = ("Failed to load CPU gemm_4bit_forward from kernels-community: No module named "
                 "'kernels'. Please make sure you already `pip install kernels`")


def test_bitsandbytes_kernel_notice_is_filtered_and_other_messages_are_not(caplog):
    import lladapt  # noqa: F401  (installs the filters)

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        logger.warning(KERNEL_NOTICE)
        logger.warning("a real problem")
    assert [r.getMessage() for r in caplog.records] == ["a real problem"]


def test_importing_bitsandbytes_after_lladapt_prints_no_kernel_notice():
    """The real import (on a CPU with AVX-512 bf16 bitsandbytes tries the hub kernel and logs)."""
    pytest.importorskip("bitsandbytes")
    done = subprocess.run(
        [sys.executable, "-c", "import lladapt, bitsandbytes"], capture_output=True, text=True,
        timeout=120, check=True,
    )
    assert "kernels-community" not in done.stderr + done.stdout


def test_our_checkpointing_calls_trip_no_deprecation_warning():
    """transformers 5 deprecated ``is_gradient_checkpointing`` and ``gradient_checkpointing_enable``
    (a FutureWarning each time); lladapt reads and sets the new names where they exist. (PEFT
    0.21 still reads the old property: pyproject.toml filters that warning for the whole suite,
    so this test is what guards our own calls.)"""
    import warnings

    model = tiny_model("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hf_compat.activation_checkpointing(model) is False
        assert hf_compat.enable_activation_checkpointing(model)
        assert hf_compat.activation_checkpointing(model) is True


def _prefilled(config, rows, length, fill):
    """A just-prefilled ``DynamicCache``: ``rows`` rows of ``length`` columns, row i valued fill + i."""
    from transformers import DynamicCache

    heads, dim = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    cache = DynamicCache(config=config)
    for index in range(config.num_hidden_layers):
        keys = torch.stack([torch.full((heads, length, dim), fill + i + 0.5 * index) for i in range(rows)])
        cache.update(keys, -keys, index)
    return cache


def _window(cache, row):
    """Row ``row``'s keys on layer 0 over the window (what attention reads), one value per column."""
    return cache.keys[0][row, 0, cache.start : cache.end, 0].tolist()


def test_row_cache_writes_each_step_in_place_and_moves_only_the_rows_it_must():
    config = tiny_model("llama").config
    cache = hf_compat.RowCache(config, rows=4)
    cache.add(_prefilled(config, 2, 3, fill=10.0))  # rows 10 and 11, 3 columns
    cache.add(_prefilled(config, 1, 5, fill=20.0))  # a longer row: the window widens on the left
    assert (cache.n, cache.width) == (3, 5)
    assert _window(cache, 2) == [20.0] * 5 and _window(cache, 0)[-3:] == [10.0] * 3
    buffer = cache.keys[0].data_ptr()
    heads, dim = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    for step in range(3):  # decode steps: one column each, written in place
        cache.reserve(1)
        for index, layer in enumerate(cache.cache.layers):
            new = torch.full((3, heads, 1, dim), 100.0 + step)
            keys, values = layer.update(new, -new, index)
            assert keys.shape[-2] == cache.width + 1 and torch.equal(values, -keys)
        cache.advance(1)
    assert cache.keys[0].data_ptr() == buffer  # no copy of the cache while it had room
    assert cache.cache.get_seq_length() == 8
    assert _window(cache, 1) == [0.0, 0.0, 11.0, 11.0, 11.0, 100.0, 101.0, 102.0]
    assert cache.keep([1, 2]) == [2, 1]  # the last row fills the freed slot 0; row 1 stays
    assert cache.n == 2 and _window(cache, 0)[:5] == [20.0] * 5 and _window(cache, 1)[2] == 11.0
    cache.drop_left(2)
    assert cache.width == 6 and _window(cache, 1)[0] == 11.0
    cache.add(_prefilled(config, 1, 40, fill=30.0))  # no room on the left: the window moves
    assert cache.width == 40 and cache.n == 3
    assert _window(cache, 0)[-6:] == [20.0, 20.0, 20.0, 100.0, 101.0, 102.0]
    assert _window(cache, 2) == [30.0] * 40
    assert cache.keep([]) == [] and cache.width == 0
