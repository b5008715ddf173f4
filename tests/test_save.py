"""Adapter files: save/load round trips, overwrite protection, PEFT interop both ways, and
checkpoints of the paper's code."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from adapters_support import (  # noqa: F401  (one_torch_thread: an autouse fixture)
    IDS,
    layout_of,
    logits,
    one_torch_thread,
    randomise,
    tiny_adapted,
)
from assets import load_stories260k

from lladapt import AdapterError, get_registry, testing
from lladapt.adapters.build import build_adapter
from lladapt.adapters.files import CONFIG_FILE, WEIGHTS_FILE, read_folder, to_peft_keys
from lladapt.adapters.model import AdaptedModel, attach, load_paper_checkpoint

CASES = [
    ("llama", {"name": "lora", "r": 4}, "both"),
    ("bloom", {"name": "series", "bottleneck_size": 8, "learn_scale": True}, "both"),
    ("gptj", {"name": "parallel", "bottleneck_size": 8}, "mlp"),
    ("opt", {"name": "series", "bottleneck_size": 8},
     {"name": "modules", "layers": [1], "modules": ["up", "down", {"name": "q", "mode": "input"}]}),
]


@pytest.mark.parametrize(("family", "adapter", "placement"), CASES, ids=lambda c: str(c)[:20])
def test_save_then_load_gives_bit_identical_logits(tmp_path, family, adapter, placement):
    adapted = tiny_adapted(family, adapter, placement)
    randomise(adapted)
    adapted.eval()
    expected = logits(adapted)
    adapted.save_adapter(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left

    fresh = testing.tiny_model(family, seed=0)
    loaded = AdaptedModel.from_pretrained(fresh, layout_of(fresh), tmp_path / "run")
    assert torch.equal(logits(loaded), expected)
    assert loaded.sites == adapted.sites and loaded.run_id == adapted.run_id
    assert loaded.adapter.config == adapted.adapter.config

    # load_adapter into an adapter of the same shape (another seed) gives the same model again
    other = tiny_adapted(family, adapter, placement, seed=0)
    other.load_adapter(tmp_path / "run")
    assert torch.equal(logits(other), expected)


def test_saved_keys_are_the_paper_and_peft_keys(tmp_path):
    adapted = tiny_adapted("llama", {"name": "series", "bottleneck_size": 4}, {"name": "mlp", "layers": [0]})
    adapted.save_adapter(tmp_path)
    meta, config, tensors = read_folder(tmp_path)
    assert sorted(tensors) == [
        "base_model.model.model.layers.0.mlp.down_proj.adapter_down.weight",
        "base_model.model.model.layers.0.mlp.down_proj.adapter_up.weight",
    ]
    assert config == meta and meta["format"] == "lladapt-adapter" and meta["format_version"] == 1
    assert meta["adapter"] == {"name": "series", "config": adapted.adapter.config.model_dump(mode="json")}
    assert meta["placement"]["name"] == "mlp"
    assert meta["base_model"]["model_type"] == "llama"


def test_another_runs_folder_is_not_overwritten(tmp_path):
    first = tiny_adapted("llama", {"name": "lora"})
    first.save_adapter(tmp_path)
    first.save_adapter(tmp_path)  # the same run may save again (checkpoints)
    second = tiny_adapted("llama", {"name": "lora"})
    with pytest.raises(AdapterError, match=f"holds an adapter of run '{first.run_id}', not of this run"):
        second.save_adapter(tmp_path)
    second.save_adapter(tmp_path, overwrite=True)
    assert read_folder(tmp_path)[0]["run_id"] == second.run_id


def test_loading_into_a_different_adapter_or_model_is_refused(tmp_path):
    tiny_adapted("llama", {"name": "lora"}).save_adapter(tmp_path)
    series = tiny_adapted("llama", {"name": "series", "bottleneck_size": 4})
    with pytest.raises(AdapterError, match="holds a 'lora' adapter at 4 sites; this model has 'series'"):
        series.load_adapter(tmp_path)
    bloom = testing.tiny_model("bloom")
    with pytest.raises(AdapterError, match="trained on another base model: model_type 'llama'"):
        AdaptedModel.from_pretrained(bloom, layout_of(bloom), tmp_path)


def test_meta_models_cannot_be_saved(tmp_path):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(testing.tiny_config("llama"))
    adapted = attach(meta, layout_of(meta), build_adapter({"name": "lora"}))
    with pytest.raises(AdapterError, match="on the meta device"):
        adapted.save_adapter(tmp_path / "x")
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- PEFT


def test_lora_saved_by_lladapt_loads_in_peft(tmp_path, stories260k):
    peft = pytest.importorskip("peft")
    loaded = load_stories260k(stories260k)
    ids = loaded.tokenizer("Once upon a time, a cat sat", return_tensors="pt").input_ids
    adapted = attach(
        loaded.model, loaded.layout, build_adapter({"name": "lora", "r": 4, "alpha": 8}),
    )
    randomise(adapted, std=0.05)
    adapted.eval()
    expected = logits(adapted, ids)
    adapted.save_adapter(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert "model.layers.0.self_attn.q_proj" in config["target_modules"]

    peft_model = peft.PeftModel.from_pretrained(load_stories260k(stories260k).model, tmp_path).eval()
    assert torch.allclose(logits(peft_model, ids), expected, atol=1e-5)
    # and lladapt reads its own PEFT-format folder back bit-identically
    again = load_stories260k(stories260k)
    assert torch.equal(logits(AdaptedModel.from_pretrained(again.model, again.layout, tmp_path), ids), expected)


def test_lora_merged_equals_unmerged_on_stories260k(stories260k):
    loaded = load_stories260k(stories260k)
    adapted = attach(loaded.model, loaded.layout, build_adapter({"name": "lora", "r": 8}),
                     None)
    randomise(adapted, std=0.02)
    adapted.eval()
    before = logits(adapted)
    adapted.merge()
    assert torch.allclose(logits(adapted), before, atol=1e-5)


def test_a_lora_trained_with_peft_imports(tmp_path):
    peft = pytest.importorskip("peft")
    model = testing.tiny_model("bloom")
    peft_model = peft.get_peft_model(
        model, peft.LoraConfig(r=4, lora_alpha=16, target_modules=["query_key_value", "dense_4h_to_h"])
    )
    randomise_peft = [p for n, p in peft_model.named_parameters() if "lora_" in n]
    with torch.no_grad():
        for p in randomise_peft:
            p.normal_(0, 0.05)
    peft_model.eval()
    expected = logits(peft_model)
    peft_model.save_pretrained(tmp_path)

    fresh = testing.tiny_model("bloom")
    adapted = AdaptedModel.from_pretrained(fresh, layout_of(fresh), tmp_path)
    assert adapted.adapter.name == "lora" and adapted.adapter.config.alpha == 16
    assert sorted({s.role for s in adapted.sites}) == ["down", "qkv"]
    assert torch.allclose(logits(adapted), expected, atol=1e-6)


# --------------------------------------------------------------------------- the paper's code


def _paper_folder(tmp_path, config: dict, state: dict) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    torch.save(state, tmp_path / "adapter_model.bin")


def _refused(folder, match: str, family: str = "llama") -> None:
    """Loading the paper checkpoint in ``folder`` into a tiny ``family`` model fails with ``match``."""
    model = testing.tiny_model(family)
    with pytest.raises(AdapterError, match=match):
        load_paper_checkpoint(model, layout_of(model), folder)


def test_paper_bottleneck_checkpoint_imports(tmp_path):
    """AdapterH as the paper's code wrote it: gate/up in mh_adapter mode, down in output mode."""
    gen = torch.Generator().manual_seed(3)
    b, layer = 8, "base_model.model.model.layers.1.mlp."
    state = {}
    for name, width in (("gate_proj", 64), ("up_proj", 64), ("down_proj", 64)):
        state[f"{layer}{name}.adapter_down.weight"] = torch.randn(b, width, generator=gen) * 0.1
        state[f"{layer}{name}.adapter_up.weight"] = torch.randn(width, b, generator=gen) * 0.1
    config = {
        "peft_type": "BOTTLENECK", "bottleneck_size": b, "non_linearity": "tanh",
        "adapter_dropout": 0.0, "use_parallel_adapter": False, "use_adapterp": False,
        "target_modules": ["gate_proj", "up_proj", "down_proj"], "scaling": 1.0,
        "init_weights": "bert", "bias": "none", "task_type": "CAUSAL_LM",
    }
    _paper_folder(tmp_path, config, state)

    # reference: the paper code's forward, written out by hand on a second copy of the model
    reference = testing.tiny_model("llama")
    mlp = reference.model.layers[1].mlp

    def delta(name, x):
        down, up = state[f"{layer}{name}.adapter_down.weight"], state[f"{layer}{name}.adapter_up.weight"]
        return F.linear(torch.tanh(F.linear(x, down)), up)

    for name in ("gate_proj", "up_proj"):
        getattr(mlp, name).register_forward_pre_hook(lambda m, a, n=name: (a[0] + delta(n, a[0]),))
    mlp.down_proj.register_forward_hook(lambda m, a, out: out + delta("down_proj", out))
    expected = logits(reference)

    model = testing.tiny_model("llama")
    adapted = AdaptedModel.from_pretrained(model, layout_of(model), tmp_path)  # via adapter_model.bin
    assert adapted.adapter.name == "series"
    assert [(s.role, s.mode) for s in adapted.sites] == [("down", "output"), ("gate", "input"), ("up", "input")]
    assert torch.allclose(logits(adapted), expected, atol=1e-6)
    assert not torch.allclose(expected, logits(testing.tiny_model("llama")))


def test_paper_parallel_checkpoint_with_learned_scale(tmp_path):
    gen = torch.Generator().manual_seed(4)
    key = "base_model.model.transformer.h.0.self_attention.query_key_value."
    state = {
        key + "adapter_down.weight": torch.randn(4, 64, generator=gen) * 0.1,
        key + "adapter_up.weight": torch.randn(192, 4, generator=gen) * 0.1,
        key + "adapter_scaling": torch.tensor([0.7]),
    }
    config = {"peft_type": "BOTTLENECK", "bottleneck_size": 4, "non_linearity": "relu",
              "use_parallel_adapter": True, "scaling": "learned", "init_weights": "mam_adapter"}
    _paper_folder(tmp_path, config, state)
    model = testing.tiny_model("bloom")
    adapted = load_paper_checkpoint(model, layout_of(model), tmp_path / "adapter_model.bin")
    assert adapted.adapter.name == "parallel" and adapted.adapter.config.learn_scale
    host = model.transformer.h[0].self_attention.query_key_value
    x = torch.randn(2, 64)
    expected = F.linear(x, host.weight, host.bias) + 0.7 * F.linear(
        torch.relu(F.linear(x, state[key + "adapter_down.weight"])), state[key + "adapter_up.weight"]
    )
    assert torch.allclose(host(x), expected, atol=1e-6)


def test_paper_lora_checkpoint_imports(tmp_path):
    gen = torch.Generator().manual_seed(5)
    key = "base_model.model.transformer.h.1.attn.v_proj."
    state = {key + "lora_A.weight": torch.randn(8, 64, generator=gen),
             key + "lora_B.weight": torch.randn(64, 8, generator=gen) * 0.01}
    config = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
              "target_modules": ["q_proj", "v_proj"], "bias": "none", "fan_in_fan_out": False,
              "merge_weights": False, "enable_lora": None}
    _paper_folder(tmp_path, config, state)
    model = testing.tiny_model("gptj")
    adapted = load_paper_checkpoint(model, layout_of(model), tmp_path)
    adapted.eval()
    host = model.transformer.h[1].attn.v_proj
    x = torch.randn(2, 64)
    expected = F.linear(x, host.weight) + 2.0 * F.linear(F.linear(x, state[key + "lora_A.weight"]), state[key + "lora_B.weight"])
    assert torch.allclose(host(x), expected, atol=1e-6)


class _NotATensor:
    pass


def test_paper_checkpoints_never_unpickle_code(tmp_path):
    _paper_folder(tmp_path, {"peft_type": "LORA", "r": 8}, {"x": _NotATensor()})
    _refused(tmp_path, "is not a plain tensor state dict")


def test_paper_merged_qkv_lora_is_refused(tmp_path):
    key = "base_model.model.transformer.h.0.self_attention.query_key_value."
    state = {key + "lora_A.weight": torch.zeros(16, 64), key + "lora_B.weight": torch.zeros(128, 8, 1)}
    _paper_folder(tmp_path, {"peft_type": "LORA", "r": 8, "enable_lora": [True, False, True]}, state)
    _refused(tmp_path, "does not import: enable_lora", "bloom")


def test_keys_without_peft_prefix_are_refused_naming_the_file(tmp_path):
    state = {"model.layers.0.mlp.down_proj.adapter_down.weight": torch.zeros(8, 64)}
    _paper_folder(tmp_path, {"peft_type": "BOTTLENECK", "bottleneck_size": 8}, state)
    _refused(tmp_path, r"adapter_model.bin': keys without the 'base_model.model.' "
             r"prefix: model.layers.0.mlp.down_proj.adapter_down.weight$")
    lora = get_registry("adapter").get("lora")
    with pytest.raises(AdapterError, match="^a PEFT LoRA file: keys without the 'base_model.model.' prefix: x$"):
        lora.from_peft({}, {"x": torch.zeros(1)})
    state = {"a.lora_A.weight": torch.zeros(1)}
    assert list(to_peft_keys(state)) == ["base_model.model.a.lora_A.weight"]
    assert lora.from_peft({}, to_peft_keys(state)) == state


@pytest.mark.parametrize(("text", "message"), [
    (None, r"adapter_config.json' is missing: it says which adapter the checkpoint holds"),
    ("{", r"adapter_config.json' is not valid JSON: Expecting property name"),
    ("[1]", r"adapter_config.json' must hold a JSON object"),
])
def test_a_paper_checkpoint_needs_a_readable_adapter_config(tmp_path, text, message):
    torch.save({"base_model.model.x": torch.zeros(1)}, tmp_path / "adapter_model.bin")
    if text is not None:
        (tmp_path / "adapter_config.json").write_text(text)
    _refused(tmp_path, message)
