"""core/models.py: loading a real model (stories260k) from a folder, presets on the meta device,
quantized loading on the CPU, and the errors a user meets (missing folder, offline hub id)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from lladapt import ModelLoadError
from lladapt.config import ModelSection, QuantizationConfig
from lladapt.models.loading import load_model, padding_for, resolve_source

PROMPT = "Once upon a time"
#: /work/shared/models/README.md: greedy decoding of PROMPT for 40 new tokens.
STORY = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
    "One day, she saw a big, red ball."
)
FIRST_SENTENCE = "Once upon a time, there was a little girl named Lily."


def greedy(loaded, prompt: str = PROMPT, new_tokens: int = 40) -> str:
    tok = loaded.tokenizer
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = loaded.model.generate(**ids, max_new_tokens=new_tokens, do_sample=False)
    return tok.decode(out[0], skip_special_tokens=True)


def test_stories260k_loads_from_its_folder_and_tells_the_story(stories260k):
    loaded = load_model(ModelSection(source=str(stories260k)))
    assert loaded.source.kind == "folder"
    assert loaded.backbone.name == "llama"
    assert (loaded.layout.num_layers, loaded.layout.hidden_size) == (5, 64)
    assert (loaded.layout.num_attention_heads, loaded.layout.num_key_value_heads) == (8, 4)
    assert (loaded.layout.intermediate_size, loaded.layout.vocab_size) == (172, 512)
    assert sum(p.numel() for p in loaded.model.parameters()) == 260_032
    assert loaded.model.dtype == torch.float32
    # the checkpoint has no pad token: the backbone gives it <unk> (id 0, as the paper's code did)
    assert (loaded.tokenizer.pad_token, loaded.tokenizer.pad_token_id) == ("<unk>", 0)
    assert loaded.model.generation_config.pad_token_id == 0
    assert greedy(loaded) == STORY


def test_padding_sides_for_generation_and_training(stories260k):
    tok = load_model(ModelSection(source=str(stories260k))).tokenizer
    tok.padding_side = "right"
    with padding_for(tok, "generate"):
        batch = tok(["Once", "Once upon a time"], padding=True)
        assert batch["input_ids"][0][:3] == [0, 0, 0]  # pads first
    assert tok.padding_side == "right"  # restored
    with padding_for(tok, "train"):
        assert tok(["Once", "Once upon a time"], padding=True)["input_ids"][0][-3:] == [0, 0, 0]


def test_dtype_is_applied(stories260k):
    loaded = load_model(ModelSection(source=str(stories260k), dtype="bfloat16"))
    assert loaded.model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16


def test_meta_load_of_a_folder_has_no_weights_and_no_tokenizer(stories260k):
    loaded = load_model(ModelSection(source=str(stories260k)), meta=True)
    assert loaded.tokenizer is None
    assert {p.device.type for p in loaded.model.parameters()} == {"meta"}
    assert sum(p.numel() for p in loaded.model.parameters()) == 260_032


def test_preset_is_built_on_the_meta_device_without_tokenizer():
    loaded = load_model(ModelSection(source="llama-7b"))
    assert (loaded.source.kind, loaded.backbone.name, loaded.tokenizer) == ("preset", "llama", None)
    assert {p.device.type for p in loaded.model.parameters()} == {"meta"}
    q = loaded.model.get_submodule(loaded.layout.module_path(31, "q"))
    assert (q.in_features, q.out_features) == (4096, 4096)


def test_explicit_tokenizer_source(stories260k):
    section = ModelSection(source=str(stories260k), tokenizer=str(stories260k))
    assert load_model(section).tokenizer.vocab_size == 512


def test_missing_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "no" / "such-model"
    with pytest.raises(ModelLoadError) as info:
        load_model(ModelSection(source=str(missing)))
    assert str(info.value) == f"model.source: no such folder '{missing}' (resolved to '{missing}')"


def test_missing_gguf_file_is_a_clear_error():
    with pytest.raises(ModelLoadError, match=r"model.source: no such .gguf file 'model.gguf'"):
        load_model(ModelSection(source="model.gguf"))


def test_folder_without_config_is_a_clear_error(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError) as info:
        load_model(ModelSection(source=str(tmp_path)))
    assert str(info.value) == (
        f"model.source: folder '{tmp_path}' has no config.json, so it is not a transformers "
        "model folder"
    )


def test_other_file_is_a_clear_error(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"is a file but not a \.gguf file"):
        load_model(ModelSection(source=str(path)))


def test_unknown_model_type_in_a_folder(tmp_path):
    from transformers import AutoConfig

    AutoConfig.for_model("gpt2", n_embd=32, n_layer=1, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"^no backbone handles model_type 'gpt2' \(model '"):
        load_model(ModelSection(source=str(tmp_path)), meta=True)


def test_local_folder_wins_over_a_preset_of_the_same_name(tmp_path, monkeypatch, stories260k):
    (tmp_path / "llama-7b").symlink_to(stories260k)
    monkeypatch.chdir(tmp_path)
    assert resolve_source("llama-7b").kind == "folder"
    assert resolve_source("opt-6.7b").kind == "preset"
    assert resolve_source("huggyllama/llama-7b").kind == "hub"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub: HF_HUB_OFFLINE for this process (huggingface_hub reads it at import) and an empty
    cache."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_offline_hub_id_not_in_cache_says_what_to_do(offline):
    with pytest.raises(ModelLoadError) as info:
        load_model(ModelSection(source="lladapt-test/no-such-model", revision="v1"))
    assert str(info.value) == (
        "cannot load model 'lladapt-test/no-such-model' at revision 'v1': it is not a local "
        f"folder or a preset, HF_HUB_OFFLINE is set, and it is not in the Hugging Face cache "
        f"({offline}). Download it on a machine with network access "
        "(`hf download lladapt-test/no-such-model`) and copy the cache (or set HF_HOME), or set "
        "model.source to a local folder."
    )


def test_offline_hub_id_in_the_cache_loads_from_it(offline, stories260k):
    """A hub id resolves through transformers' own hub cache: a snapshot of stories260k laid out
    the way huggingface_hub stores it loads with no network, at its revision only."""
    repo = offline / "models--lladapt-test--stories260k"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    for file in stories260k.iterdir():
        (snapshot / file.name).symlink_to(file)
    loaded = load_model(ModelSection(source="lladapt-test/stories260k"))
    assert (loaded.source.kind, loaded.backbone.name) == ("hub", "llama")
    assert greedy(loaded) == STORY
    with pytest.raises(ModelLoadError, match=r"^cannot load model 'lladapt-test/stories260k' at "
                       r"revision 'v2': it is not a local folder or a preset, HF_HUB_OFFLINE"):
        load_model(ModelSection(source="lladapt-test/stories260k", revision="v2"))


def test_offline_misspelt_preset_suggests_the_preset(offline):
    with pytest.raises(ModelLoadError, match=r"Did you mean the preset 'llama-7b'\?$"):
        load_model(ModelSection(source="llama-7bb"))


def test_trust_remote_code_is_off_by_default_and_passed_through(stories260k, monkeypatch):
    from transformers import AutoConfig

    seen = []
    real = AutoConfig.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoConfig, "from_pretrained", spy)
    load_model(ModelSection(source=str(stories260k)), meta=True)
    load_model(ModelSection(source=str(stories260k), trust_remote_code=True), meta=True)
    assert seen == [False, True]


# --------------------------------------------------------------------------- quantization


def _quantized(stories260k, **quant):
    return load_model(ModelSection(source=str(stories260k), quantization=QuantizationConfig(**quant)))


def _quiet_greedy(loaded) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bitsandbytes' "inputs will be cast" notes
        return greedy(loaded)


def test_4bit_nf4_loading_on_the_cpu(stories260k):
    import bitsandbytes as bnb

    loaded = _quantized(stories260k, bits=4, quant_type="nf4", compute_dtype="float32")
    model = loaded.model
    for index in range(5):
        for role in loaded.layout.layer.roles:
            module = model.get_submodule(loaded.layout.module_path(index, role))
            assert type(module) is bnb.nn.Linear4bit
            assert module.weight.quant_state.quant_type == "nf4"
            assert module.weight.quant_state.nested  # double quantization (the default)
            assert module.compute_dtype == torch.float32
    assert type(model.lm_head) is torch.nn.Linear  # the head stays unquantized
    assert model.lm_head.weight.dtype == torch.float32
    # lossy but still the same story's start (greedy; 4-bit changes the later tokens). Runs the
    # CPU kernels on stories260k's FFN width of 172, which bitsandbytes' packed path rejects.
    assert _quiet_greedy(loaded).startswith(FIRST_SENTENCE)


def test_4bit_fp4_without_double_quant(stories260k):
    loaded = _quantized(stories260k, bits=4, quant_type="fp4", double_quant=False)
    q = loaded.model.get_submodule(loaded.layout.module_path(0, "down"))
    assert (q.weight.quant_state.quant_type, q.weight.quant_state.nested) == ("fp4", False)


def test_8bit_loading_on_the_cpu(stories260k):
    import bitsandbytes as bnb

    loaded = _quantized(stories260k, bits=8)
    for role in loaded.layout.layer.roles:
        module = loaded.model.get_submodule(loaded.layout.module_path(0, role))
        assert type(module) is bnb.nn.Linear8bitLt
        assert module.weight.dtype == torch.int8
    assert type(loaded.model.lm_head) is torch.nn.Linear
    assert _quiet_greedy(loaded).startswith(FIRST_SENTENCE)


def test_config_json_of_stories260k_is_what_the_tests_assume(stories260k):
    config = json.loads((stories260k / "config.json").read_text())
    assert (config["model_type"], config["pad_token_id"], config["tie_word_embeddings"]) == (
        "llama", None, True,
    )


@pytest.mark.gpu
def test_4bit_loading_on_a_gpu_with_a_device_map(stories260k):
    loaded = load_model(ModelSection(
        source=str(stories260k), device_map="auto",
        quantization=QuantizationConfig(bits=4, compute_dtype="float16"),
    ))
    q = loaded.model.get_submodule(loaded.layout.module_path(0, "q"))
    assert q.weight.device.type == "cuda" and q.compute_dtype == torch.float16
    ids = loaded.tokenizer(PROMPT, return_tensors="pt").to("cuda")
    out = loaded.model.generate(**ids, max_new_tokens=40, do_sample=False)
    assert loaded.tokenizer.decode(out[0], skip_special_tokens=True).startswith(FIRST_SENTENCE)


def test_a_load_asks_for_no_hub_kernels(stories260k, monkeypatch):
    """transformers 5.25 loads layers' code from the hub by default (``use_kernels``), and fails
    without the ``kernels`` package: lladapt runs no downloaded code unless asked."""
    from transformers import AutoModelForCausalLM

    seen = {}
    real = AutoModelForCausalLM.from_pretrained.__func__

    def spying(cls, *args, **kwargs):
        seen.update(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spying))
    load_model(ModelSection(source=str(stories260k)))
    assert seen.get("use_kernels") is False
