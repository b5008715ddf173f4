"""Series, parallel and LoRA adapters: the maths, every placement on every backbone, parameters,
merging, and training on quantized base models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from adapters_support import (  # noqa: F401  (one_torch_thread: an autouse fixture)
    IDS,
    base_logits,
    layout_of,
    logits,
    one_torch_thread,
    randomise,
    tiny_adapted,
)

from lladapt import AdapterError, testing
from lladapt.adapters.build import build_adapter, build_placement
from lladapt.adapters.model import attach
from lladapt.common import hf_compat

ADAPTERS = ("series", "parallel", "lora")
PLACEMENTS = (
    "attention",
    "mlp",
    "both",
    {"name": "modules", "modules": ["q", "v", "down"], "layers": [1]},
)


def _zero_init(adapter: str) -> dict:
    """The adapter's config with a zero-initialised output (LoRA: always; bottlenecks: mam)."""
    return {"name": adapter, "bottleneck_size": 8} | ({} if adapter == "lora" else {"init": "mam"})


# --------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize("family", testing.FAMILIES)
@pytest.mark.parametrize("placement", PLACEMENTS, ids=lambda p: p if isinstance(p, str) else p["name"])
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_every_adapter_on_every_placement_and_backbone(family, placement, adapter):
    base = base_logits(family)
    cfg = _zero_init(adapter)
    if adapter == "lora":
        cfg = {"name": "lora", "r": 2}
    adapted = tiny_adapted(family, cfg, placement)

    # zero-initialised: the adapted model starts exactly where the base model is
    assert torch.equal(logits(adapted), base)

    adapted.train()
    loss = adapted(IDS, labels=IDS).loss
    loss.backward()
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in adapted.named_parameters() if p.grad is not None}
    assert trainable == with_grad == {f"base_model.{n}" for n in adapted.parameter_names}
    assert all(".lora_" in n or ".adapter_" in n for n in trainable)
    assert any(p.grad.abs().sum() > 0 for p in adapted.trainable_parameters())

    # one step later the branch changes the output: it is wired in, not just present
    with torch.no_grad():
        for p in adapted.trainable_parameters():
            p -= 0.5 * p.grad
    adapted.eval()
    assert not torch.allclose(logits(adapted), base)


# --------------------------------------------------------------------------- the maths


def _one_site(adapter: dict, target: dict, family: str = "llama"):
    adapted = tiny_adapted(family, adapter, {"name": "modules", "modules": [target], "layers": [0]})
    randomise(adapted)
    (site,) = adapted.sites
    return adapted, site, adapted.base_model.get_submodule(site.path)


def _bottleneck(host, x, act=torch.tanh, scale=1.0):
    return host.adapter_up(act(host.adapter_down(x))) * scale


X = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))


def test_series_input_mode_transforms_the_linear_input():
    _, site, host = _one_site({"name": "series", "bottleneck_size": 4, "scale": 0.5}, {"name": "up"})
    assert site.mode == "input"  # the default on the MLP's input projections (mh_adapter)
    assert host.adapter_down.weight.shape == (4, host.in_features)
    expected = F.linear(X + _bottleneck(host, X, scale=0.5), host.weight)
    assert torch.allclose(host(X), expected, atol=1e-6)


def test_series_output_mode_transforms_the_linear_output():
    _, site, host = _one_site(
        {"name": "series", "bottleneck_size": 4, "non_linearity": "relu"}, {"name": "down"}
    )
    assert site.mode == "output"
    assert host.adapter_up.weight.shape == (host.out_features, 4)
    x = torch.randn(3, host.in_features)
    y = F.linear(x, host.weight)
    assert torch.allclose(host(x), y + _bottleneck(host, y, act=torch.relu), atol=1e-6)


def test_parallel_on_one_linear_maps_in_features_to_out_features():
    _, site, host = _one_site({"name": "parallel", "bottleneck_size": 4}, {"name": "up"})
    assert site.mode == "parallel" and site.source is None
    assert host.adapter_down.weight.shape == (4, host.in_features)
    assert host.adapter_up.weight.shape == (host.out_features, 4)
    expected = F.linear(X, host.weight) + _bottleneck(host, X)
    assert torch.allclose(host(X), expected, atol=1e-6)


def test_parallel_alongside_a_block_reads_the_first_projection_input():
    adapted = tiny_adapted(
        "llama", {"name": "parallel", "bottleneck_size": 4, "non_linearity": "gelu"},
        {"name": "mlp", "layers": [0]},
    )
    randomise(adapted)
    (site,) = adapted.sites
    assert site.source == "model.layers.0.mlp.gate_proj" and site.path.endswith("down_proj")
    model = adapted.base_model
    source, host = model.get_submodule(site.source), model.get_submodule(site.path)
    x_block, x_down = torch.randn(3, 64), torch.randn(3, host.in_features)
    source(x_block)  # records the block input, as the MLP's forward does
    expected = F.linear(x_down, host.weight) + _bottleneck(host, x_block, act=F.gelu)
    assert torch.allclose(host(x_down), expected, atol=1e-6)


@pytest.mark.parametrize("rslora", [False, True])
def test_lora_adds_the_scaled_low_rank_update(rslora):
    _, site, host = _one_site(
        {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "use_rslora": rslora}, {"name": "q"}
    )
    scaling = 8 / (math.sqrt(4) if rslora else 4)
    expected = F.linear(X, host.weight) + scaling * host.lora_B(host.lora_A(X))
    assert torch.allclose(host(X), expected, atol=1e-6)


def test_lora_initialisation_kaiming_a_zero_b():
    adapted = tiny_adapted("llama", {"name": "lora", "r": 4})
    host = adapted.base_model.get_submodule(adapted.sites[0].path)
    assert torch.count_nonzero(host.lora_B.weight) == 0
    bound = 1 / math.sqrt(host.in_features)  # kaiming_uniform(a=sqrt(5)) on fan_in
    assert host.lora_A.weight.abs().max() <= bound and host.lora_A.weight.std() > bound / 4


def test_bottleneck_initialisations():
    bert = tiny_adapted("llama", {"name": "series", "bottleneck_size": 32}, "mlp")
    host = bert.base_model.get_submodule(bert.sites[0].path)
    for weight in (host.adapter_down.weight, host.adapter_up.weight):
        assert abs(weight.std().item() - 0.02) < 0.004 and abs(weight.mean().item()) < 0.004
    mam = tiny_adapted("llama", {"name": "series", "bottleneck_size": 32, "init": "mam_adapter"}, "mlp")
    host = mam.base_model.get_submodule(mam.sites[0].path)
    assert mam.adapter.config.init == "mam"  # the paper code's spelling is accepted
    assert torch.count_nonzero(host.adapter_up.weight) == 0
    assert torch.count_nonzero(host.adapter_down.weight) == host.adapter_down.weight.numel()


def test_learned_scale_is_one_trainable_scalar_per_site():
    adapted = tiny_adapted(
        "llama", {"name": "parallel", "bottleneck_size": 4, "learn_scale": True, "scale": 2.0},
        "both",
    )
    scales = [n for n in adapted.parameter_names if n.endswith("adapter_scaling")]
    assert len(scales) == len(adapted.sites) == 4
    param = adapted.base_model.get_parameter(scales[0])
    assert param.shape == (1,) and param.item() == 2.0 and param.requires_grad
    adapted(IDS, labels=IDS).loss.backward()
    assert param.grad is not None and param.grad.abs().item() > 0
    # 2 * 64 * 4 per site plus the scalar
    assert adapted.num_parameters(trainable_only=True) == 4 * (2 * 64 * 4 + 1)


def test_dropout_acts_in_training_only():
    adapted = tiny_adapted("llama", {"name": "series", "bottleneck_size": 8, "dropout": 0.5}, "mlp")
    randomise(adapted, std=0.5)
    assert not adapted.training  # attached to an eval-mode model: the new dropout is off too
    assert torch.equal(logits(adapted), logits(adapted))
    adapted.train()
    assert not torch.equal(logits(adapted), logits(adapted))


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_parameters_follow_the_weight_they_sit_beside(adapter):
    model = testing.tiny_model("llama").to(torch.bfloat16)
    adapted = attach(model, layout_of(model), build_adapter({"name": adapter}))
    assert {p.dtype for p in adapted.trainable_parameters()} == {torch.bfloat16}

    with torch.device("meta"):
        from transformers import AutoModelForCausalLM

        meta = AutoModelForCausalLM.from_config(testing.tiny_config("llama"))
    adapted = attach(meta, layout_of(meta), build_adapter({"name": adapter}))
    assert {p.device.type for p in adapted.trainable_parameters()} == {"meta"}
    assert adapted.num_parameters(trainable_only=True) > 0


def test_counts_and_freezing():
    adapted = tiny_adapted("llama", {"name": "lora", "r": 4}, {"name": "modules", "modules": ["q", "v"]})
    # q: 64 -> 64, v: 64 -> 32 (grouped-query: 2 kv heads of 16): r * (in + out) each, 2 layers
    assert adapted.num_parameters(trainable_only=True) == 2 * 4 * ((64 + 64) + (64 + 32))
    base = sum(p.numel() for p in testing.tiny_model("llama").parameters())
    assert adapted.num_parameters() == base + adapted.num_parameters(trainable_only=True)
    counts = adapted.parameter_counts()
    assert counts["base"] == base and 0 < counts["trainable_percent"] < 100
    # transformers' spelling, which its Trainer calls for the FLOP count
    assert adapted.num_parameters(only_trainable=True) == 2 * 4 * ((64 + 64) + (64 + 32))
    embeddings = adapted.base_model.get_input_embeddings().weight.numel()
    assert adapted.num_parameters(exclude_embeddings=True) == adapted.num_parameters() - embeddings
    assert adapted.num_parameters(only_trainable=True, exclude_embeddings=True) == 2 * 4 * ((64 + 64) + (64 + 32))
    assert not any(p.requires_grad for n, p in adapted.named_parameters() if "lora_" not in n)


def test_forward_and_generate_pass_through():
    """generate goes through the adapter: with a nonzero LoRA B it equals greedy decoding by the
    adapted forward, token for token, and differs from the base model's generation."""
    base = testing.tiny_model("llama")
    adapted = tiny_adapted("llama", {"name": "lora"})
    assert adapted.config is adapted.base_model.config  # attributes fall through
    randomise(adapted, std=0.5)  # B nonzero: the adapter changes the model's choices
    out = adapted.generate(IDS[:1], max_new_tokens=6, do_sample=False)
    ids = IDS[:1]
    for _ in range(6):  # greedy decoding by the adapted model's plain forward, no cache
        ids = torch.cat([ids, logits(adapted, ids)[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(out, ids)
    assert not torch.equal(out, base.generate(IDS[:1], max_new_tokens=6, do_sample=False))


def test_unload_restores_the_base_model():
    base = logits(testing.tiny_model("opt"))
    adapted = tiny_adapted("opt", {"name": "parallel", "bottleneck_size": 4}, "both")
    randomise(adapted)
    assert not torch.equal(logits(adapted), base)
    model = adapted.unload()
    assert torch.equal(logits(model), base)
    assert not any("adapter_" in n for n, _ in model.named_parameters())


def test_an_adapter_instance_attaches_once():
    adapter = build_adapter({"name": "lora"})
    model = testing.tiny_model("llama")
    attach(model, layout_of(model), adapter)
    with pytest.raises(AdapterError, match="attached already"):
        attach(testing.tiny_model("llama"), layout_of(model), adapter)


def test_gradient_checkpointing_gives_the_same_gradients():
    """The parallel adapter beside a block records the block input in a hook; recomputation under
    activation checkpointing must record it again, in the same order."""
    grads = []
    for checkpointing in (False, True):
        adapted = tiny_adapted("llama", {"name": "parallel", "bottleneck_size": 4}, "both")
        randomise(adapted)
        adapted.train()
        if checkpointing:
            assert hf_compat.enable_activation_checkpointing(adapted)
        adapted(IDS, labels=IDS, use_cache=False).loss.backward()
        grads.append([p.grad for p in adapted.trainable_parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


def test_a_failed_attach_leaves_the_model_as_it_was():
    first = tiny_adapted("llama", {"name": "lora", "r": 2}, {"name": "modules", "modules": ["v"]})
    model = first.base_model
    second = build_adapter({"name": "lora", "r": 2})
    with pytest.raises(AdapterError, match="'model.layers.0.self_attn.v_proj' has a LoRA adapter already"):
        attach(model, layout_of(model), second, build_placement({"name": "modules", "modules": ["q", "v"]}))
    assert not hasattr(model.model.layers[0].self_attn.q_proj, "lora_A")  # q's branch was taken out
    assert all(p.requires_grad for p in first.trainable_parameters())  # flags restored
    assert [n for n, p in model.named_parameters() if p.requires_grad] == first.parameter_names


# --------------------------------------------------------------------------- merging


def test_lora_merge_matches_and_unmerge_restores_exactly():
    adapted = tiny_adapted("bloom", {"name": "lora", "r": 4, "dropout": 0.0}, "both")
    randomise(adapted, std=0.1)
    adapted.eval()
    before = logits(adapted)
    weights = {n: p.detach().clone() for n, p in adapted.base_model.named_parameters() if "lora_" not in n}
    adapted.merge()
    merged = logits(adapted)
    assert torch.allclose(merged, before, atol=1e-5) and not torch.equal(
        adapted.base_model.get_submodule(adapted.sites[0].path).weight, weights[adapted.sites[0].path + ".weight"]
    )
    adapted.unmerge()
    for name, param in adapted.base_model.named_parameters():
        if name in weights:
            assert torch.equal(param, weights[name]), name
    assert torch.equal(logits(adapted), before)


def test_merge_without_a_copy_unmerges_by_subtraction():
    adapted = tiny_adapted("llama", {"name": "lora", "r": 4}, "attention")
    randomise(adapted, std=0.1)
    weight = adapted.base_model.get_submodule(adapted.sites[0].path).weight
    original = weight.detach().clone()
    adapted.merge(keep_original=False)
    with pytest.raises(AdapterError, match="merged already"):
        adapted.merge()
    adapted.unmerge()
    assert torch.allclose(weight, original, atol=1e-6)


@pytest.mark.parametrize("adapter", ["series", "parallel"])
def test_bottlenecks_cannot_merge(adapter):
    adapted = tiny_adapted("llama", {"name": adapter, "bottleneck_size": 4})
    with pytest.raises(AdapterError, match=f"adapter '{adapter}' cannot be merged"):
        adapted.merge()


# --------------------------------------------------------------------------- quantized bases


TEXT = (
    "Once upon a time there was a little cat. The cat liked to play in the sun. "
    "One day the cat saw a big dog."
)


def _quantized(stories260k, bits: int):
    pytest.importorskip("bitsandbytes")
    from lladapt.config import ModelSection
    from lladapt.models.loading import load_model

    return load_model(ModelSection(source=str(stories260k), quantization={"bits": bits}))


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize(
    "adapter",
    [
        {"name": "lora", "r": 4, "dropout": 0.0},
        {"name": "series", "bottleneck_size": 8},
        {"name": "parallel", "bottleneck_size": 8, "init": "mam"},
    ],
    ids=lambda a: a["name"],
)
def test_training_on_a_quantized_base_lowers_the_loss(stories260k, bits, adapter):
    loaded = _quantized(stories260k, bits)
    layer = loaded.model.get_submodule(loaded.layout.module_path(0, "down"))
    assert type(layer).__name__ == ("Linear4bit" if bits == 4 else "Linear8bitLt")
    torch.manual_seed(0)
    adapted = attach(loaded.model, loaded.layout, build_adapter(adapter), build_placement({"name": "both"}))
    # packed 4-bit weights count as the parameters they stand for: 260,032 in stories260k
    assert adapted.num_parameters() - adapted.num_parameters(trainable_only=True) == 260_032
    adapted.train()
    ids = loaded.tokenizer(TEXT, return_tensors="pt").input_ids
    optimizer = torch.optim.AdamW(adapted.trainable_parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        loss = adapted(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses
    if adapter["name"] == "lora":
        with pytest.raises(AdapterError, match="cannot merge LoRA into quantized layers"):
            adapted.merge()


@pytest.mark.parametrize("name", ["tanh", "relu", "gelu", "gelu_new", "silu", "swish", "sigmoid",
                                  "leaky_relu", "mish", "elu", "identity"])
def test_every_non_linearity_a_config_accepts_builds_its_module(name):
    from torch import nn

    from lladapt.plugins.adapters.bottleneck import BottleneckConfig, activation

    config = BottleneckConfig(non_linearity=name)
    module = activation(config.non_linearity)
    x = torch.linspace(-3, 3, 13)
    expected = {"tanh": torch.tanh, "relu": torch.relu, "gelu": nn.functional.gelu,
                "gelu_new": lambda t: nn.functional.gelu(t, approximate="tanh"),
                "silu": nn.functional.silu, "swish": nn.functional.silu, "sigmoid": torch.sigmoid,
                "leaky_relu": nn.functional.leaky_relu, "mish": nn.functional.mish,
                "elu": nn.functional.elu, "identity": lambda t: t}[name]
    torch.testing.assert_close(module(x), expected(x))


def test_an_unknown_non_linearity_is_refused_with_the_choices():
    from pydantic import ValidationError

    from lladapt.plugins.adapters.bottleneck import BottleneckConfig

    with pytest.raises(ValidationError, match=r"Input should be 'tanh', 'relu'.* or 'identity'"):
        BottleneckConfig(non_linearity="softmax")
