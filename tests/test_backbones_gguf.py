"""Loading a ``.gguf`` file (llama.cpp's format) through ``model.source``.

The fixture writes stories260k's real weights and tokenizer as a GGUF file the way llama.cpp's
converter does (its tensor names, q/k rows permuted for its rotary layout, the SentencePiece
vocabulary as tokenizer.ggml.*), so the test runs transformers' real GGUF loading path."""

from __future__ import annotations

from pathlib import Path

import gguf  # core dependencies: a broken install fails here, it is not skipped
import numpy as np
import pytest
import sentencepiece as spm
import torch

from lladapt.config import ModelSection
from lladapt.models.loading import load_model, resolve_source

STORY = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
    "One day, she saw a big, red ball."
)


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (transformers undoes it)."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _token_type(sp, i: int) -> int:
    if sp.is_unknown(i):
        return gguf.TokenType.UNKNOWN
    if sp.is_control(i):
        return gguf.TokenType.CONTROL
    if sp.is_byte(i):
        return gguf.TokenType.BYTE
    return gguf.TokenType.NORMAL


def write_llama_gguf(folder: Path, path: Path) -> Path:
    """Write the LLaMA checkpoint in ``folder`` (safetensors + tokenizer.model) as float32 GGUF."""
    from safetensors.numpy import load_file
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(folder)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    ids = range(sp.vocab_size())
    writer.add_tokenizer_model("llama")
    writer.add_token_list([sp.id_to_piece(i).encode() for i in ids])
    writer.add_token_scores([sp.get_score(i) for i in ids])
    writer.add_token_types([_token_type(sp, i) for i in ids])
    writer.add_bos_token_id(cfg.bos_token_id)
    writer.add_eos_token_id(cfg.eos_token_id)
    writer.add_unk_token_id(sp.unk_id())
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for key, weight in load_file(str(folder / "model.safetensors")).items():
        if key.endswith("q_proj.weight"):
            weight = _permute(weight, cfg.num_attention_heads)
        elif key.endswith("k_proj.weight"):
            weight = _permute(weight, cfg.num_key_value_heads)
        # tied embeddings: no output.weight, as llama.cpp writes it
        writer.add_tensor(names.get_name(key, try_suffixes=(".weight",)), np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def stories_gguf(stories260k, tmp_path):
    folder = tmp_path / "gguf"
    folder.mkdir()
    return write_llama_gguf(stories260k, folder / "stories260k-f32.gguf")


def test_gguf_file_loads_the_same_model(stories_gguf, stories260k):
    loaded = load_model(ModelSection(source=str(stories_gguf)))
    assert loaded.source.kind == "gguf"
    assert (loaded.source.location, loaded.source.gguf_file) == (
        str(stories_gguf.parent), "stories260k-f32.gguf",
    )
    assert loaded.backbone.name == "llama"
    assert (loaded.layout.num_key_value_heads, loaded.layout.intermediate_size) == (4, 172)
    reference = load_model(ModelSection(source=str(stories260k))).model.state_dict()
    weights = loaded.model.state_dict()
    assert weights.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(weights[key], value), key  # q/k un-permuted exactly
    tok = loaded.tokenizer
    assert tok.pad_token_id == 0  # the backbone's fix applies to GGUF tokenizers too
    ids = tok("Once upon a time", return_tensors="pt")
    out = loaded.model.generate(**ids, max_new_tokens=40, do_sample=False)
    assert tok.decode(out[0], skip_special_tokens=True) == STORY


def test_folder_with_one_gguf_file_resolves_to_it(stories_gguf):
    source = resolve_source(str(stories_gguf.parent))
    assert (source.kind, source.gguf_file) == ("gguf", "stories260k-f32.gguf")


def test_folder_with_two_gguf_files_asks_which(stories_gguf):
    (stories_gguf.parent / "other.gguf").write_bytes(stories_gguf.read_bytes())
    from lladapt import ModelLoadError

    with pytest.raises(ModelLoadError, match=r"it holds 2 \.gguf files \(other\.gguf, "
                       r"stories260k-f32\.gguf\): name one"):
        resolve_source(str(stories_gguf.parent))


def test_gguf_meta_load_counts_without_weights(stories_gguf):
    loaded = load_model(ModelSection(source=str(stories_gguf)), meta=True)
    assert {p.device.type for p in loaded.model.parameters()} == {"meta"}
    assert sum(p.numel() for p in loaded.model.parameters()) == 260_032


def test_a_file_inside_an_installed_package_is_a_source(stories_gguf, tmp_path, monkeypatch):
    package = tmp_path / "site" / "my_models"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tiny.gguf").write_bytes(stories_gguf.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    source = resolve_source("package:my_models/tiny.gguf")
    assert (source.kind, source.location, source.gguf_file) == ("gguf", str(package.resolve()), "tiny.gguf")
    loaded = load_model(ModelSection(source="package:my_models/tiny.gguf"), meta=True)
    assert sum(p.numel() for p in loaded.model.parameters()) == 260_032
    from lladapt import ModelLoadError

    with pytest.raises(ModelLoadError, match=r"no such \.gguf file 'package:my_models/other\.gguf'"):
        resolve_source("package:my_models/other.gguf")
    with pytest.raises(ModelLoadError, match="no installed Python package 'not_there_pkg'"):
        resolve_source("package:not_there_pkg/x.gguf")
