"""The built-in backbones (llama, bloom, opt, gptj): every role of every layout resolves, in the real
transformers module trees of tiny random models, to a Linear of the width the config implies, and
the layout's block roles (attention_in, mlp_out, ...) really read / write those blocks."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import lladapt
from lladapt import LayerLayout, Layout, ModelLoadError
from lladapt.config import ModelSection
from lladapt.models.loading import find_preset, resolve_backbone, verify_layout
from lladapt.testing import tiny_config, tiny_model

# Expected by hand from the transformers 5 module trees and the tiny configs of lladapt.testing
# (hidden 64, 4 heads of 16; llama: 2 kv heads, FFN 96; bloom: FFN 4 x 64; opt/gptj: FFN 96).
EXPECTED = {
    "llama": dict(
        backbone="llama", layers="model.layers", embeddings="model.embed_tokens",
        attention="self_attn", mlp="mlp", kv_heads=2, ffn=96,
        attention_in=("q", "k", "v"), mlp_in=("gate", "up"),
        roles={
            "q": ("self_attn.q_proj", 64, 64), "k": ("self_attn.k_proj", 64, 32),
            "v": ("self_attn.v_proj", 64, 32), "o": ("self_attn.o_proj", 64, 64),
            "gate": ("mlp.gate_proj", 64, 96), "up": ("mlp.up_proj", 64, 96),
            "down": ("mlp.down_proj", 96, 64),
        },
    ),
    "bloom": dict(
        backbone="bloom", layers="transformer.h", embeddings="transformer.word_embeddings",
        attention="self_attention", mlp="mlp", kv_heads=4, ffn=256,
        attention_in=("qkv",), mlp_in=("up",),
        roles={
            "qkv": ("self_attention.query_key_value", 64, 192),
            "o": ("self_attention.dense", 64, 64),
            "up": ("mlp.dense_h_to_4h", 64, 256), "down": ("mlp.dense_4h_to_h", 256, 64),
        },
    ),
    "opt": dict(
        backbone="opt", layers="model.decoder.layers", embeddings="model.decoder.embed_tokens",
        attention="self_attn", mlp=None, kv_heads=4, ffn=96,
        attention_in=("q", "k", "v"), mlp_in=("up",),
        roles={
            "q": ("self_attn.q_proj", 64, 64), "k": ("self_attn.k_proj", 64, 64),
            "v": ("self_attn.v_proj", 64, 64), "o": ("self_attn.out_proj", 64, 64),
            "up": ("fc1", 64, 96), "down": ("fc2", 96, 64),
        },
    ),
    "gptj": dict(
        backbone="gptj", layers="transformer.h", embeddings="transformer.wte",
        attention="attn", mlp="mlp", kv_heads=4, ffn=96,
        attention_in=("q", "k", "v"), mlp_in=("up",),
        roles={
            "q": ("attn.q_proj", 64, 64), "k": ("attn.k_proj", 64, 64),
            "v": ("attn.v_proj", 64, 64), "o": ("attn.out_proj", 64, 64),
            "up": ("mlp.fc_in", 64, 96), "down": ("mlp.fc_out", 96, 64),
        },
    ),
}

# LLaMA-shaped families the llama backbone also claims: same tiny sizes as llama above.
LLAMA_LIKE = ("mistral", "qwen2")


def _model_and_layout(family: str):
    if family in LLAMA_LIKE:
        from transformers import AutoConfig, AutoModelForCausalLM

        cfg = AutoConfig.for_model(
            family, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
        )
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg).eval()
    else:
        cfg = tiny_config(family)
        model = tiny_model(family)
    backbone = resolve_backbone(ModelSection(source=f"tiny-{family}"), cfg)
    return model, cfg, backbone, backbone.layout(cfg)


ALL_FAMILIES = (*EXPECTED, *LLAMA_LIKE)


def _expected(family: str) -> dict:
    return EXPECTED["llama" if family in LLAMA_LIKE else family]


def test_builtin_backbones_are_registered_with_their_model_types():
    registry = lladapt.get_registry("backbone")
    assert registry.names() == ["bloom", "gptj", "llama", "opt"]
    assert registry.get("llama").model_types == ("llama", "mistral", "qwen2")
    assert registry.get("bloom").model_types == ("bloom",)
    assert registry.get("opt").model_types == ("opt",)
    assert registry.get("gptj").model_types == ("gptj",)
    assert registry.get("gpt-j") is registry.get("gptj")  # alias
    assert registry.entry("opt").plugin == "lladapt.plugins.backbones"


def test_registering_backbones_imports_neither_torch_nor_transformers():
    code = (
        "import sys, lladapt; lladapt.get_registry('backbone'); "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_model_type_picks_the_backbone(family):
    _, cfg, backbone, _ = _model_and_layout(family)
    assert cfg.model_type == family
    assert backbone.name == _expected(family)["backbone"]


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_every_role_is_a_linear_of_the_expected_width(family):
    model, _, _, layout = _model_and_layout(family)
    exp = _expected(family)
    assert layout.layers == exp["layers"]
    assert (layout.num_layers, layout.hidden_size, layout.num_attention_heads) == (2, 64, 4)
    assert (layout.num_key_value_heads, layout.head_dim) == (exp["kv_heads"], 16)
    assert (layout.intermediate_size, layout.vocab_size) == (exp["ffn"], 128)
    assert set(layout.layer.roles) == set(exp["roles"])
    for index in range(layout.num_layers):
        for role, (rel, fan_in, fan_out) in exp["roles"].items():
            path = layout.module_path(index, role)
            assert path == f"{exp['layers']}.{index}.{rel}"
            module = model.get_submodule(path)
            assert type(module) is torch.nn.Linear, path
            assert (module.in_features, module.out_features) == (fan_in, fan_out), path
    embeddings = model.get_submodule(layout.embeddings)
    assert layout.embeddings == exp["embeddings"]
    assert isinstance(embeddings, torch.nn.Embedding) and embeddings.num_embeddings == 128
    verify_layout(model, layout, "test")  # the loader's own check agrees


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_block_roles_read_and_write_the_blocks(family):
    """attention_in roles see the attention block's input, attention_out produces its output;
    the same for the MLP (OPT has no MLP module: mlp is None). BLOOM's blocks add the residual
    themselves, so there the block output is the out role's output plus the residual."""
    model, _, _, layout = _model_and_layout(family)
    exp = _expected(family)
    lay = layout.layer
    assert (lay.attention, lay.mlp) == (exp["attention"], exp["mlp"])
    assert (lay.attention_in, lay.mlp_in) == (exp["attention_in"], exp["mlp_in"])
    assert (lay.attention_out, lay.mlp_out) == ("o", "down")
    layer = model.get_submodule(layout.layer_path(1))
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(name):
        def hook(module, args, kwargs, output):
            x = args[0] if args else kwargs["hidden_states"]
            y = output[0] if isinstance(output, tuple) else output
            residual = args[1] if len(args) > 1 else kwargs.get("residual")
            if family == "bloom" and name in ("attention", "mlp"):
                y = y - residual
            seen[name] = (x.detach().clone(), y.detach().clone())

        return hook

    blocks = {"attention": lay.attention, "mlp": lay.mlp}
    paths = {**{k: v for k, v in blocks.items() if v}, **{r: lay.resolve_role(r) for r in lay.roles}}
    handles = [
        layer.get_submodule(p).register_forward_hook(record(n), with_kwargs=True)
        for n, p in paths.items()
    ]
    with torch.no_grad():
        model(torch.tensor([[3, 5, 7, 11, 13]]))
    for h in handles:
        h.remove()
    exact = dict(rtol=0, atol=0) if family != "bloom" else dict(rtol=1e-6, atol=1e-6)
    for role in lay.attention_in:
        torch.testing.assert_close(seen[role][0], seen["attention"][0], rtol=0, atol=0)
    torch.testing.assert_close(seen[lay.attention_out][1], seen["attention"][1], **exact)
    if lay.mlp is not None:
        for role in lay.mlp_in:
            torch.testing.assert_close(seen[role][0], seen["mlp"][0], rtol=0, atol=0)
        torch.testing.assert_close(seen[lay.mlp_out][1], seen["mlp"][1], **exact)
    else:  # OPT: up and down are the MLP
        assert (lay.resolve_role("up"), lay.resolve_role("down")) == ("fc1", "fc2")


def test_fused_qkv_answers_for_q_k_and_v():
    _, _, _, layout = _model_and_layout("bloom")
    for role in ("q", "k", "v", "qkv"):
        assert layout.layer.resolve_role(role) == "self_attention.query_key_value"
    assert layout.module_path(0, "v") == "transformer.h.0.self_attention.query_key_value"


def test_explicit_backbone_overrides_model_type():
    cfg = tiny_config("llama")
    backbone = resolve_backbone(ModelSection(source="x", backbone="gpt-j"), cfg)
    assert backbone.name == "gptj"


def test_unknown_model_type_lists_the_registered_backbones():
    from transformers import AutoConfig

    cfg = AutoConfig.for_model("gpt2", n_embd=32, n_layer=1, n_head=2)
    with pytest.raises(ModelLoadError) as info:
        resolve_backbone(ModelSection(source="some/gpt2"), cfg)
    assert str(info.value) == (
        "no backbone handles model_type 'gpt2' (model 'some/gpt2'). Registered backbones "
        "(model_types): bloom (bloom); gptj (gptj); llama (llama, mistral, qwen2); opt (opt). "
        "Set model.backbone to one whose layout matches this model, or add a backbone plugin "
        "(see docs/backbones.md)."
    )


def test_verify_layout_names_the_mismatch():
    model, cfg, _, layout = _model_and_layout("llama")
    bloom_layout = resolve_backbone(ModelSection(source="x", backbone="bloom"), cfg).layout(cfg)
    with pytest.raises(ModelLoadError, match="backbone 'bloom': the model has no decoder layer "
                       "list at 'transformer.h'"):
        verify_layout(model, bloom_layout, "bloom")
    wrong_ffn = Layout(**{**layout.__dict__, "intermediate_size": 100})
    with pytest.raises(ModelLoadError) as info:
        verify_layout(model, wrong_ffn, "llama")
    assert str(info.value) == (
        "backbone 'llama': role 'gate' at 'model.layers.0.mlp.gate_proj' is 64->96, the layout "
        "implies 64->100"
    )
    not_linear = Layout(**{**layout.__dict__, "layer": LayerLayout(
        projections={**layout.layer.projections, "up": "mlp.act_fn"}, attention="self_attn",
        mlp="mlp", attention_in=("q", "k", "v"), mlp_in=("gate", "up"))})
    with pytest.raises(ModelLoadError, match="role 'up' should be a Linear at "
                       "'model.layers.0.mlp.act_fn', found SiLUActivation"):
        verify_layout(model, not_linear, "llama")


PRESET_SHAPES = {
    # name: backbone, hidden, layers, heads, kv heads, head_dim, ffn, vocab
    "llama-7b": ("llama", 4096, 32, 32, 32, 128, 11008, 32000),
    "llama-13b": ("llama", 5120, 40, 40, 40, 128, 13824, 32000),
    "bloom-7b1": ("bloom", 4096, 30, 32, 32, 128, 16384, 250880),
    "gpt-j-6b": ("gptj", 4096, 28, 16, 16, 256, 16384, 50400),
    "opt-6.7b": ("opt", 4096, 32, 32, 32, 128, 16384, 50272),
}


@pytest.mark.parametrize("preset", PRESET_SHAPES)
def test_preset_layouts(preset):
    cls, name = find_preset(preset.upper())  # case-insensitive
    backbone_name, *sizes = PRESET_SHAPES[preset]
    assert (cls.name, name) == (backbone_name, preset)
    backbone = cls()
    layout = backbone.layout(backbone.preset_config(name))
    assert [
        layout.hidden_size, layout.num_layers, layout.num_attention_heads,
        layout.num_key_value_heads, layout.head_dim, layout.intermediate_size, layout.vocab_size,
    ] == sizes


def test_gptj_preset_keeps_partial_rotary():
    cls, name = find_preset("gpt-j-6b")
    assert cls().preset_config(name).rotary_dim == 64


def test_unknown_preset_is_none():
    assert find_preset("llama-7") is None


def test_a_plugin_backbone_for_another_family_loads_by_model_type(tmp_path):
    """The docs/backbones.md example: GPT-NeoX (Pythia) described declaratively, registered like a
    plugin's hook would, then picked from a saved model's model_type."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from lladapt.models.loading import load_model
    from lladapt.plugins.backbones.decoder import DecoderBackbone

    class GPTNeoXBackbone(DecoderBackbone):
        """GPT-NeoX / Pythia: fused query_key_value, dense, MLP dense_h_to_4h / dense_4h_to_h."""

        name = "gpt_neox"
        model_types = ("gpt_neox",)
        layers_path = "gpt_neox.layers"
        embeddings_path = "gpt_neox.embed_in"
        layer_layout = LayerLayout(
            projections={
                "qkv": "attention.query_key_value",
                "o": "attention.dense",
                "up": "mlp.dense_h_to_4h",
                "down": "mlp.dense_4h_to_h",
            },
            attention="attention",
            mlp="mlp",
            attention_in=("qkv",),
        )
        presets = {"pythia-tiny": dict(model_type="gpt_neox", hidden_size=32, intermediate_size=48,
                                       num_hidden_layers=3, num_attention_heads=2, vocab_size=64)}

    lladapt.get_registry("backbone").add(GPTNeoXBackbone, plugin="test-plugin")
    cfg = AutoConfig.for_model("gpt_neox", hidden_size=64, intermediate_size=96,
                               num_hidden_layers=2, num_attention_heads=4, vocab_size=128)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    loaded = load_model(ModelSection(source=str(tmp_path)), meta=True)  # verify_layout ran
    assert loaded.backbone.name == "gpt_neox"
    assert (loaded.layout.intermediate_size, loaded.layout.head_dim) == (96, 16)
    qkv = loaded.model.get_submodule(loaded.layout.module_path(1, "k"))
    assert (qkv.in_features, qkv.out_features) == (64, 192)
    preset = load_model(ModelSection(source="pythia-tiny"))
    assert (preset.source.kind, preset.layout.num_layers) == ("preset", 3)
