"""What a plugin author (and a user) is told: placement mistakes reported by `validate` exactly as
by `params` (both place the adapter on the meta device), an unknown module said once with its
layers, and an adapter without `detach()` told so in its own words."""

from __future__ import annotations

import pytest
import torch
import yaml
from click.testing import CliRunner

import lladapt
from lladapt import testing
from lladapt.adapters.model import attach
from lladapt.cli import cli
from lladapt.models.loading import load_model

#: placement mistakes that need the model's shape (a 2-layer tiny LLaMA), and what each must say.
CORPUS: dict[str, tuple[dict, list[str]]] = {
    "mode the adapter lacks": (
        {"adapter": "series", "placement": {"name": "modules", "modules": [{"name": "k", "mode": "parallel"}]}},
        ["placement.modules: adapter 'series' has no mode 'parallel' (target 'k'); its modes: input, output"],
    ),
    "unknown module": (
        {"adapter": "lora", "placement": {"name": "modules", "modules": ["q", "kk"]}},
        ["placement: module 'kk' does not exist in layers 0-1. Roles of this backbone: q (self_attn.q_proj), "
         "k (self_attn.k_proj), v (self_attn.v_proj), o (self_attn.o_proj), gate (mlp.gate_proj), "
         "up (mlp.up_proj), down (mlp.down_proj). Linear modules of a layer: self_attn.q_proj, "
         "self_attn.k_proj, self_attn.v_proj, self_attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj"],
    ),
    "layer out of range": (
        {"adapter": "lora", "placement": {"name": "modules", "modules": ["q"], "layers": [7]}},
        ["placement.layers: no layer 7; the model has 2 layers (0-1, or -2..-1 from the end)"],
    ),
    "range past the last layer": (
        {"adapter": "series", "placement": {"name": "mlp", "layers": "0-5"}},
        ["placement.layers: range 0-5 goes past the last layer; the model has 2 layers (0-1)"],
    ),
    "a module that is not Linear": (
        {"adapter": "lora", "placement": {"name": "modules", "modules": ["mlp"], "layers": [1]}},
        ["placement: module 'mlp' is not a Linear layer in layer 1. Roles of this backbone: q "
         "(self_attn.q_proj), k (self_attn.k_proj), v (self_attn.v_proj), o (self_attn.o_proj), gate "
         "(mlp.gate_proj), up (mlp.up_proj), down (mlp.down_proj). Linear modules of a layer: "
         "self_attn.q_proj, self_attn.k_proj, self_attn.v_proj, self_attn.o_proj, mlp.gate_proj, "
         "mlp.up_proj, mlp.down_proj"],
    ),
    "a role the backbone lacks": (
        {"adapter": "lora", "placement": {"name": "modules", "modules": ["qkv"]}},
        ["placement.modules: the backbone has no 'qkv' projection; its roles: q (self_attn.q_proj), "
         "k (self_attn.k_proj), v (self_attn.v_proj), o (self_attn.o_proj), gate (mlp.gate_proj), "
         "up (mlp.up_proj), down (mlp.down_proj)"],
    ),
    "a module placement for a prefix adapter": (
        {"adapter": "prefix", "placement": "mlp"},
        ["placement: placement 'mlp' puts adapters on Linear modules; adapter 'prefix' goes to layer "
         "sites: use its placement 'all_layers'"],
    ),
    "several mistakes at once": (
        {"adapter": "series", "placement": {"name": "modules", "layers": [9],
                                            "modules": [{"name": "q", "mode": "parallel"}, "qkv"]}},
        ["placement.modules: adapter 'series' has no mode 'parallel' (target 'q'); its modes: input, output",
         "placement.modules: the backbone has no 'qkv' projection; its roles: q (self_attn.q_proj), "
         "k (self_attn.k_proj), v (self_attn.v_proj), o (self_attn.o_proj), gate (mlp.gate_proj), "
         "up (mlp.up_proj), down (mlp.down_proj)",
         "placement.layers: no layer 9; the model has 2 layers (0-1, or -2..-1 from the end)"],
    ),
}


@pytest.fixture(scope="module")
def tiny_llama_folder(tmp_path_factory):
    """A model folder holding only a config.json: enough for the meta device."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    testing.tiny_config("llama").save_pretrained(folder)
    return folder


def _errors(command: str, path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, [command, str(path)])
    lines = result.output.splitlines()
    return result.exit_code, [line[2:] for line in lines[1:] if line.startswith("  ")]


@pytest.mark.parametrize("case", list(CORPUS))
def test_validate_and_params_report_the_same_placement_errors(case, tiny_llama_folder, tmp_path):
    config, expected = CORPUS[case]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": str(tiny_llama_folder), **config}))
    validate_code, validate_errors = _errors("validate", path)
    params_code, params_errors = _errors("params", path)
    assert (validate_code, validate_errors) == (2, expected)
    assert (params_code, params_errors) == (2, expected)


def test_a_valid_config_is_still_valid(tiny_llama_folder, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": str(tiny_llama_folder), "adapter": "lora"}))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert (result.exit_code, result.output) == (0, f"{path}: valid\n")


def test_an_unknown_module_is_reported_once_with_its_layers():
    section = lladapt.load_config({"model": "llama-7b"}).model
    loaded = load_model(section, meta=True)
    adapter = lladapt.get_registry("adapter").get("lora")()
    placement = lladapt.get_registry("placement").get("modules")(
        lladapt.get_registry("placement").get("modules").Config(modules=["kk", "q"], layers=[0, 1, 2, 5, 30, 31])
    )
    with pytest.raises(lladapt.PlacementError) as info:
        attach(loaded.model, loaded.layout, adapter, placement)
    lines = str(info.value).splitlines()
    assert len(lines) == 2, lines  # the header and ONE line for 32 ... 6 layers
    assert lines[1].startswith("  module 'kk' does not exist in layers 0-2, 5, 30-31. Roles of")


class NoDetach(lladapt.Adapter):
    """Scales the output of q by a learned vector; cannot be removed (no detach())."""

    name = "no-detach"

    def attach(self, model, layout, sites):
        for site in sites:
            host = model.get_submodule(site.path)
            host.scale = torch.nn.Parameter(torch.ones(host.out_features))
            host.register_forward_hook(lambda m, args, out: out * m.scale)


def test_an_adapter_without_detach_is_told_so_in_its_own_words():
    model = testing.tiny_model("llama")
    layout = lladapt.get_registry("backbone").get("llama")().layout(model.config)
    placement = lladapt.get_registry("placement").get("modules")(
        lladapt.get_registry("placement").get("modules").Config(modules=["q"])
    )
    adapted = attach(model, layout, NoDetach(), placement)
    with pytest.raises(lladapt.AdapterError) as info:
        adapted.unload()
    assert str(info.value) == (
        "adapter 'no-detach' cannot be detached: it has no `detach()` (it cannot remove what it "
        "inserted; build a fresh base model instead)"
    )
    with pytest.raises(lladapt.AdapterError, match="fold into the weights"):
        adapted.merge()
