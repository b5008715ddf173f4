"""Prefix tuning specifics: sizing by key/value heads (grouped-query attention), the paper's count
on LLaMA-7B without allocating memory, the KV-cache mechanics (explicit position ids, manual
incremental decoding, a mask that already covers the prefix) and the errors a user can meet."""

from __future__ import annotations

import pytest
import torch

import lladapt
from lladapt import AdapterError, ConfigError, PlacementError, Site
from lladapt.adapters.model import attach, attach_from_config
from lladapt.common import hf_compat
from lladapt.plugins.adapters.prefix import Prefix
from lladapt.testing import tiny_model


def layout_of(model):
    return lladapt.get_registry("backbone").get(model.config.model_type)().layout(model.config)


def prefixed(family: str = "llama", **fields):
    model = tiny_model(family)
    torch.manual_seed(1)
    return attach_from_config(model, layout_of(model), {"name": "prefix", **fields}).eval()


def ids(batch: int = 2, length: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 128, (batch, length), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("family", "fields", "expected"),
    [
        # tiny llama: 2 layers, 2 key/value heads of 16 (4 query heads): 10 * 2 * 2 * (2 * 16)
        ("llama", {}, 1280),
        ("llama", {"num_virtual_tokens": 3}, 384),
        # tiny bloom, opt, gptj: 4 heads of 16, no grouping: 10 * 2 * 2 * 64
        ("bloom", {}, 2560),
        ("opt", {}, 2560),
        ("gptj", {}, 2560),
        # reparameterised: Embedding(10, 32) + Linear(32, 24) + Linear(24, 2 * 2 * 32)
        ("llama", {"prefix_projection": True, "encoder_hidden_size": 24},
         10 * 32 + (32 * 24 + 24) + (24 * 128 + 128)),
        # MLP width defaults to the key/value width (PEFT's default)
        ("llama", {"prefix_projection": True}, 10 * 32 + (32 * 32 + 32) + (32 * 128 + 128)),
    ],
)
def test_parameter_count(family, fields, expected):
    model = prefixed(family, **fields)
    assert model.parameter_counts()["trainable"] == expected


def test_prefix_tensors_have_the_cache_shape_of_grouped_query_attention():
    model = prefixed("llama")
    with torch.no_grad():
        out = model(input_ids=ids(2, 5), use_cache=True)
    cache = hf_compat.output_cache(out)
    assert cache.get_seq_length() == 10 + 5
    keys = cache.layers[0].keys
    assert tuple(keys.shape) == (2, 2, 15, 16)  # batch, key/value heads, prefix + tokens, head_dim


def test_emnlp_prefix_count_on_llama_7b_without_memory():
    """The paper's prefix run (10 virtual tokens, no projection): 2 * 32 * 10 * 4096."""
    from lladapt.config import ModelSection
    from lladapt.models.loading import load_model

    loaded = load_model(ModelSection(source="llama-7b"), meta=True)
    model = attach_from_config(loaded.model, loaded.layout, {"name": "prefix"})
    assert model.parameter_counts()["trainable"] == 2_621_440
    assert all(p.is_meta for p in model.trainable_parameters())


def test_default_learning_rate_is_the_papers():
    assert Prefix.default_learning_rate == 3e-2


# --------------------------------------------------------------------------- cache mechanics


def test_explicit_position_ids_count_real_tokens():
    model = prefixed("llama")
    x = ids()
    positions = torch.arange(x.shape[1]).expand_as(x)
    with torch.no_grad():
        assert torch.equal(model(input_ids=x, position_ids=positions).logits, model(input_ids=x).logits)


def test_attention_mask_may_already_cover_the_prefix():
    model = prefixed("bloom")
    x = ids()
    with torch.no_grad():
        short = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
        full = model(input_ids=x, attention_mask=torch.ones(2, 10 + x.shape[1], dtype=torch.long)).logits
    assert torch.equal(short, full)


@pytest.mark.parametrize("family", ["llama", "bloom", "opt", "gptj"])
def test_manual_incremental_decoding_matches_one_forward(family):
    model = prefixed(family)
    x = ids(1, 7)
    with torch.no_grad():
        whole = model(input_ids=x).logits[:, -1]
        first = model(input_ids=x[:, :-1], attention_mask=torch.ones(1, 6, dtype=torch.long), use_cache=True)
        step = model(
            input_ids=x[:, -1:],
            attention_mask=torch.ones(1, 7, dtype=torch.long),
            past_key_values=hf_compat.output_cache(first),  # the old name still works
        ).logits[:, -1]
    torch.testing.assert_close(step, whole, rtol=0, atol=1e-5)


def test_positional_arguments_are_rewritten_too():
    model = prefixed("llama")
    x = ids()
    mask = torch.ones_like(x)
    with torch.no_grad():
        assert torch.equal(model(x, mask).logits, model(input_ids=x, attention_mask=mask).logits)


# --------------------------------------------------------------------------- errors


def test_a_subset_of_layers_is_refused_with_the_reason():
    model = tiny_model("llama")
    layout = layout_of(model)
    sites = [Site(path=layout.layer_path(0), layer=0, kind="layer")]
    with pytest.raises(AdapterError, match=r"needs every decoder layer \(0-1\); the placement selected layers 0") as err:
        attach(model, layout, Prefix(), sites=sites)
    assert "one attention mask" in str(err.value)


def test_module_placements_point_to_the_prefix_placement():
    model = tiny_model("llama")
    with pytest.raises(PlacementError, match="use its placement 'all_layers'"):
        attach_from_config(model, layout_of(model), {"name": "prefix"}, {"name": "attention", "layers": [0]})


def test_gradient_checkpointing_is_refused():
    model = prefixed("llama")
    assert hf_compat.enable_activation_checkpointing(model)
    model.train()
    with pytest.raises(AdapterError, match="prefix tuning cannot train with gradient checkpointing: transformers drops the KV cache"):
        model(input_ids=ids(), labels=ids())
    model.eval()  # checkpointing only acts in training: evaluation keeps working
    with torch.no_grad():
        model(input_ids=ids())


def test_mask_of_the_wrong_width_is_reported():
    model = prefixed("llama")
    x = ids(2, 6)
    with pytest.raises(AdapterError, match=r"attention_mask has 4 columns; with 10 virtual tokens expected 6 \(without them\) or 16"):
        model(input_ids=x, attention_mask=torch.ones(2, 4, dtype=torch.long))


def test_foreign_cache_is_reported():
    from transformers import DynamicCache

    model = prefixed("llama")
    cache = DynamicCache()
    cache.update(torch.zeros(1, 2, 3, 16), torch.zeros(1, 2, 3, 16), 0)
    with pytest.raises(AdapterError, match="holds 3 tokens, fewer than the 10 prefix tokens"):
        model(input_ids=ids(1, 1), past_key_values=cache)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"encoder_hidden_size": 8}, "encoder_hidden_size is only used with prefix_projection: true"),
        ({"num_virtual_tokens": 0}, "num_virtual_tokens: must be greater than 0"),
        ({"init": "xavier"}, "adapter.init: must be 'random' or 'zero'"),
    ],
)
def test_config_errors(fields, message):
    with pytest.raises(ConfigError, match=message):
        lladapt.load_config({"model": "llama-7b", "adapter": {"name": "prefix", **fields}})


def test_zero_init_starts_every_prefix_at_zero():
    for fields in ({"init": "zero"}, {"init": "zero", "prefix_projection": True}):
        model = prefixed("llama", **fields)
        with torch.no_grad():
            prefixes = model.base_model.lladapt_virtual_tokens()
        assert prefixes.shape == (10, 2 * 2 * 32)
        assert torch.count_nonzero(prefixes) == 0


def test_a_model_without_a_kv_cache_argument_is_refused():
    """A causal LM whose forward takes no ``past_key_values`` (a custom or legacy model) cannot
    receive prefixes."""

    class NoCache(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def get_input_embeddings(self):
            return self.inner.get_input_embeddings()

        def forward(self, input_ids, attention_mask=None, labels=None, inputs_embeds=None):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    inner = tiny_model("llama")
    model = NoCache(inner)
    layout = layout_of(inner)
    sites = Prefix.default_sites(layout)
    with pytest.raises(AdapterError, match="adapter 'prefix' cannot work with NoCache: its forward takes no past_key_values \\(or cache\\), and the prefixes are handed to the attention layers as a transformers KV cache"):
        attach(model, layout, Prefix(), sites=sites)
    assert not hasattr(model, "lladapt_virtual_tokens")
