"""Placements: layer selection, roles through the backbone layout, block semantics per adapter,
explicit modules, default placements and the errors a user can cause."""

from __future__ import annotations

import pytest
from adapters_support import (  # noqa: F401  (one_torch_thread: an autouse fixture)
    layout_of,
    one_torch_thread,
    tiny_adapted,
)
from pydantic import ValidationError

from lladapt import ConfigError, PlacementError, Site, get_registry, load_config, testing
from lladapt.adapters.build import build_adapter, build_placement
from lladapt.adapters.model import attach_from_config


def _sites(family: str, adapter: dict, placement: dict | str) -> list[Site]:
    if isinstance(placement, str):
        placement = {"name": placement}
    layout = layout_of(testing.tiny_model(family))
    return build_placement(placement).resolve(layout, build_adapter(adapter))


def _brief(sites: list[Site]) -> list[tuple]:
    return [(s.layer, s.path.split(".", 3)[-1], s.mode, s.source and s.source.split(".")[-1]) for s in sites]


# --------------------------------------------------------------------------- layers


@pytest.mark.parametrize(
    ("layers", "expected"),
    [("all", [0, 1]), ([1], [1]), ([-1, 0, 0], [0, 1]), ("1-1", [1]), ({"start": 0, "end": 1}, [0, 1]), (1, [1])],
)
def test_layer_selection(layers, expected):
    sites = _sites("llama", {"name": "series"}, {"name": "mlp", "layers": layers})
    assert [s.layer for s in sites] == expected


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ("0-5", "range 0-5 goes past the last layer; the model has 2 layers (0-1)"),
        ([0, 7], "no layer 7; the model has 2 layers"),
    ],
)
def test_layers_out_of_range(layers, message):
    with pytest.raises(PlacementError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _sites("llama", {"name": "series"}, {"name": "attention", "layers": layers})


@pytest.mark.parametrize("layers", ["first", "3-1", {"start": 2}])
def test_malformed_layers_are_config_errors(layers):
    with pytest.raises(ValidationError):
        get_registry("placement").get("mlp").Config(layers=layers)


# --------------------------------------------------------------------------- blocks


def test_series_goes_after_the_block():
    assert _brief(_sites("llama", {"name": "series"}, {"name": "both", "layers": [0]})) == [
        (0, "self_attn.o_proj", "output", None),
        (0, "mlp.down_proj", "output", None),
    ]


def test_parallel_goes_alongside_the_block():
    assert _brief(_sites("bloom", {"name": "parallel"}, {"name": "both", "layers": [1]})) == [
        (1, "self_attention.dense", "parallel", "query_key_value"),
        (1, "mlp.dense_4h_to_h", "parallel", "dense_h_to_4h"),
    ]


def test_lora_goes_on_every_projection_of_the_block():
    assert [s.role for s in _sites("llama", {"name": "lora"}, {"name": "both", "layers": [0]})] == [
        "q", "k", "v", "o", "gate", "up", "down",
    ]
    assert [s.role for s in _sites("bloom", {"name": "lora"}, {"name": "attention", "layers": [0]})] == [
        "qkv", "o",
    ]


# --------------------------------------------------------------------------- modules


def test_fused_qkv_stands_in_for_q_k_v_once():
    sites = _sites("bloom", {"name": "parallel"}, {"name": "modules", "modules": ["q", "k", "v"]})
    assert _brief(sites) == [
        (0, "self_attention.query_key_value", "parallel", None),
        (1, "self_attention.query_key_value", "parallel", None),
    ]


@pytest.mark.parametrize(
    ("family", "name", "path", "mode"),
    [
        ("gptj", "fc_in", "mlp.fc_in", "input"),  # a module name: its role (up) gives the mode
        ("bloom", "query_key_value", "self_attention.query_key_value", "output"),
        ("llama", "mlp.down_proj", "mlp.down_proj", "output"),
        ("opt", "up", "fc1", "input"),  # OPT's MLP linears live on the layer itself
    ],
)
def test_targets_by_module_name_or_role(family, name, path, mode):
    (site,) = _sites(family, {"name": "series"}, {"name": "modules", "modules": [name], "layers": [0]})
    assert site.path.endswith("." + path) and site.mode == mode


def test_explicit_modes_override_the_default():
    sites = _sites(
        "llama", {"name": "series"},
        {"name": "modules", "layers": [0], "modules": [{"name": "gate", "mode": "output"}, "o"]},
    )
    assert [(s.role, s.mode) for s in sites] == [("gate", "output"), ("o", "output")]


def test_a_role_the_backbone_lacks_lists_its_roles():
    with pytest.raises(PlacementError) as err:
        _sites("bloom", {"name": "lora"}, {"name": "modules", "modules": ["gate"]})
    assert "no 'gate' projection; its roles: qkv (self_attention.query_key_value), o (" in str(err.value)


def test_an_unknown_module_name_lists_the_linear_modules():
    model = testing.tiny_model("gptj")
    with pytest.raises(PlacementError) as err:
        from lladapt.adapters.model import attach

        attach(model, layout_of(model), build_adapter({"name": "lora"}),
               build_placement({"name": "modules", "modules": ["c_attn"], "layers": [0]}))
    message = str(err.value)
    assert "module 'c_attn' does not exist in layer 0." in message
    assert "Linear modules of a layer: attn.k_proj, attn.v_proj, attn.q_proj, attn.out_proj, mlp.fc_in, mlp.fc_out" in message
    assert not any(p.requires_grad is False for p in model.parameters())  # nothing was touched


def test_a_module_that_is_not_linear_is_refused():
    with pytest.raises(PlacementError, match="module 'mlp' is not a Linear layer in layer 0"):
        tiny_adapted("llama", {"name": "lora"}, {"name": "modules", "modules": ["mlp"], "layers": [0]})


def test_a_mode_the_adapter_lacks():
    with pytest.raises(PlacementError, match="adapter 'lora' has no mode 'input' .target 'q'.; its modes: parallel"):
        _sites("llama", {"name": "lora"}, {"name": "modules", "modules": [{"name": "q", "mode": "input"}]})


def test_one_module_with_two_modes_is_refused():
    with pytest.raises(PlacementError, match="targeted twice with different modes"):
        _sites("llama", {"name": "series"},
               {"name": "modules", "modules": [{"name": "up"}, {"name": "mlp.up_proj", "mode": "output"}]})


def test_module_placements_refuse_prompt_learning_adapters():
    with pytest.raises(PlacementError, match="adapter 'prefix' goes to layer sites"):
        _sites("llama", {"name": "prefix"}, "mlp")


# --------------------------------------------------------------------------- defaults and configs


def test_default_placements():
    lora = tiny_adapted("llama", {"name": "lora"})
    assert [(s.layer, s.role) for s in lora.sites] == [(0, "q"), (0, "v"), (1, "q"), (1, "v")]
    series = tiny_adapted("llama", {"name": "series"})
    assert [(s.role, s.mode) for s in series.sites] == [("down", "output")] * 2
    parallel = tiny_adapted("llama", {"name": "parallel"})
    assert [(s.role, s.mode, s.source.split(".")[-1]) for s in parallel.sites] == [
        ("down", "parallel", "gate_proj")
    ] * 2


def test_attach_from_a_run_config():
    config = load_config(
        {
            "model": "llama-7b",
            "adapter": {"name": "series", "bottleneck_size": 16},
            "placement": {"name": "modules", "layers": "0-0", "modules": ["up", "down"]},
        }
    )
    model = testing.tiny_model("llama")
    adapted = attach_from_config(model, layout_of(model), config.adapter, config.placement)
    assert [(s.role, s.mode) for s in adapted.sites] == [("up", "input"), ("down", "output")]
    # up's input and down's output are both hidden-wide (64): 64 -> 16 -> 64 each
    assert adapted.num_parameters(trainable_only=True) == 2 * (64 * 16 + 16 * 64)


def test_placement_field_errors_name_the_field():
    with pytest.raises(ConfigError) as err:
        load_config({"model": "llama-7b", "adapter": "lora", "placement": {"name": "modules", "modules": []}})
    assert "placement.modules" in str(err.value)
