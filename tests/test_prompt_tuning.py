"""Prompt tuning and P-tuning specifics: sizes, the loss over prepended virtual tokens, the three
initialisations of a soft prompt, folders PEFT wrote, and the errors a user can meet."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from assets import load_stories260k

import lladapt
from lladapt import AdapterError, ConfigError
from lladapt.adapters.model import AdaptedModel, attach, attach_from_config
from lladapt.common import hf_compat
from lladapt.plugins.adapters.prompt import PromptTuning
from lladapt.plugins.adapters.ptuning import PTuning
from lladapt.testing import tiny_model

#: PEFT's own warnings (transformers deprecations it trips, its position-id notice).
pytestmark = [
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:Position ids are not supported:UserWarning"),
]


def layout_of(model):
    return lladapt.get_registry("backbone").get(model.config.model_type)().layout(model.config)


def with_adapter(name: str, family: str = "llama", **fields) -> AdaptedModel:
    model = tiny_model(family)
    torch.manual_seed(1)
    return attach_from_config(model, layout_of(model), {"name": name, **fields}).eval()


def ids(batch: int = 2, length: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 128, (batch, length), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- sizes

D = 64  # tiny models' embedding width


@pytest.mark.parametrize(
    ("name", "fields", "expected"),
    [
        ("prompt", {}, 10 * D),
        ("prompt", {"num_virtual_tokens": 4}, 4 * D),
        # MLP D -> h -> h -> D with h = D by default, plus the inputs
        ("ptuning", {}, 10 * D + 3 * (D * D + D)),
        ("ptuning", {"encoder_hidden_size": 16}, 10 * D + (D * 16 + 16) + (16 * 16 + 16) + (16 * D + D)),
        # bidirectional 2-layer LSTM (hidden 16), then 32 -> 32 -> D
        ("ptuning", {"encoder": "lstm", "encoder_hidden_size": 16},
         10 * D
         + 2 * (4 * 16 * D + 4 * 16 * 16 + 2 * 4 * 16)
         + 2 * (4 * 16 * 32 + 4 * 16 * 16 + 2 * 4 * 16)
         + (32 * 32 + 32) + (32 * D + D)),
    ],
)
def test_parameter_count(name, fields, expected):
    assert with_adapter(name, **fields).parameter_counts()["trainable"] == expected


@pytest.mark.parametrize(("name", "expected"), [("prompt", 10 * 4096), ("ptuning", 10 * 4096 + 3 * (4096 * 4096 + 4096))])
def test_llama_7b_counts_without_memory(name, expected):
    from lladapt.config import ModelSection
    from lladapt.models.loading import load_model

    loaded = load_model(ModelSection(source="llama-7b"), meta=True)
    model = attach_from_config(loaded.model, loaded.layout, {"name": name})
    assert model.parameter_counts()["trainable"] == expected
    assert all(p.is_meta for p in model.trainable_parameters())


def test_opt_prompt_has_the_width_of_its_embeddings_not_of_its_hidden_states():
    """OPT-350m style: 32-wide embeddings projected up to 64-wide hidden states."""
    model = tiny_model("opt", word_embed_proj_dim=32)
    adapted = attach_from_config(model, layout_of(model), {"name": "prompt"})
    assert adapted.parameter_counts()["trainable"] == 10 * 32
    out = adapted(input_ids=ids(), labels=ids())
    assert out.logits.shape == (2, 16, 128)


# --------------------------------------------------------------------------- the loss


@pytest.mark.parametrize("name", ["prompt", "ptuning"])
def test_loss_is_over_the_real_tokens_only(name):
    model = with_adapter(name, num_virtual_tokens=4)
    x = ids()
    out = model(input_ids=x, attention_mask=torch.ones_like(x), labels=x)
    assert out.logits.shape == (2, 4 + 6, 128)
    # the last virtual token predicts the first real one; virtual tokens themselves carry no loss
    expected = F.cross_entropy(out.logits[:, 3:-1].reshape(-1, 128), x.reshape(-1))
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("name", ["prompt", "ptuning"])
def test_gradient_checkpointing_gives_the_same_gradients(name):
    """Unlike prefixes, prepended embeddings need no KV cache, so checkpointing works."""
    grads = []
    for checkpointed in (False, True):
        model = with_adapter(name, num_virtual_tokens=4)
        if checkpointed:
            assert hf_compat.enable_activation_checkpointing(model)
        model.train()
        x = ids()
        model(input_ids=x, labels=x).loss.backward()
        grads.append([p.grad for p in model.trainable_parameters()])
    for plain, checkpointed in zip(*grads, strict=True):
        torch.testing.assert_close(checkpointed, plain)


def test_default_learning_rate():
    assert PromptTuning.default_learning_rate == PTuning.default_learning_rate == 3e-2


# --------------------------------------------------------------------------- initialisation


def test_vocab_init_copies_rows_of_the_embedding_table():
    model = with_adapter("prompt", init="vocab")
    table = model.base_model.get_input_embeddings().weight
    for row in model.trainable_parameters()[0]:
        assert (table == row).all(dim=1).any()


def test_random_init_is_not_from_the_table():
    model = with_adapter("prompt")
    table = model.base_model.get_input_embeddings().weight
    assert not any((table == row).all(dim=1).any() for row in model.trainable_parameters()[0])


def test_text_init_from_the_tokenizer_named_in_the_config(stories260k):
    base = load_stories260k(stories260k).model
    model = attach_from_config(
        base, layout_of(base),
        {"name": "prompt", "init_text": "Once upon a time", "tokenizer": str(stories260k)},
    )
    table = base.get_input_embeddings().weight
    # "Once upon a time" is tokens 403 407 261 378 (no BOS), cycled to fill 10 virtual tokens
    expected = table[[403, 407, 261, 378, 403, 407, 261, 378, 403, 407]]
    assert torch.equal(model.trainable_parameters()[0], expected)


def test_text_init_uses_the_tokenizer_lladapt_hands_over(stories260k):
    from transformers import AutoTokenizer

    base = load_stories260k(stories260k).model
    adapter = PromptTuning(PromptTuning.Config(init_text="Once", num_virtual_tokens=2))
    adapter.tokenizer = AutoTokenizer.from_pretrained(str(stories260k))
    model = attach(base, layout_of(base), adapter)
    assert torch.equal(model.trainable_parameters()[0], base.get_input_embeddings().weight[[403, 403]])


def test_text_init_finds_the_tokenizer_of_a_loaded_model(stories260k):
    base = load_stories260k(stories260k).model  # from_pretrained records name_or_path
    model = attach_from_config(base, layout_of(base), {"name": "prompt", "init_text": "time"})
    assert torch.equal(model.trainable_parameters()[0][0], base.get_input_embeddings().weight[378])


def test_text_init_without_a_tokenizer_says_how_to_give_one_and_changes_nothing():
    model = tiny_model("llama")
    with pytest.raises(AdapterError, match="init_text needs a tokenizer: set adapter.tokenizer"):
        attach_from_config(model, layout_of(model), {"name": "prompt", "init_text": "hello"})
    assert not hasattr(model, "lladapt_virtual_tokens") and not model._forward_pre_hooks


def test_text_init_with_another_models_tokenizer_is_refused(stories260k):
    with pytest.raises(AdapterError, match="token id 407 .* beyond the model's 128 embeddings"):
        with_adapter("prompt", init_text="Once upon a time", tokenizer=str(stories260k))


@pytest.mark.parametrize(
    ("adapter", "message"),
    [
        ({"name": "prompt", "init": "text"}, "init: text needs init_text"),
        ({"name": "prompt", "init": "vocab", "init_text": "hi"}, "init_text is only used with init: text"),
        ({"name": "prompt", "tokenizer": "gpt2"}, "tokenizer is only used with init_text"),
        ({"name": "ptuning", "encoder_num_layers": 3}, "encoder_num_layers only apply to encoder: lstm"),
        ({"name": "ptuning", "encoder": "gru"}, "adapter.encoder: must be 'mlp' or 'lstm'"),
        ({"name": "ptuning", "encoder": "lstm", "encoder_dropout": 1.0}, "encoder_dropout: must be less than 1"),
    ],
)
def test_config_errors(adapter, message):
    with pytest.raises(ConfigError, match=message):
        lladapt.load_config({"model": "llama-7b", "adapter": adapter})


# --------------------------------------------------------------------------- folders PEFT wrote (every adapter)


def _peft_folder(tmp_path, config):
    peft = pytest.importorskip("peft")
    torch.manual_seed(3)
    theirs = peft.get_peft_model(tiny_model("llama"), config).eval()
    theirs.save_pretrained(str(tmp_path / "peft"))
    return theirs, tmp_path / "peft"


def test_prompt_tuning_folder_written_by_peft_loads(tmp_path):
    from peft import PromptTuningConfig

    theirs, folder = _peft_folder(tmp_path, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5))
    ours = AdaptedModel.from_pretrained(tiny_model("llama"), layout_of(tiny_model("llama")), folder).eval()
    assert ours.adapter.name == "prompt" and ours.adapter.config.num_virtual_tokens == 5
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=x).logits, theirs(input_ids=x).logits, rtol=0, atol=1e-6)


def test_prefix_folder_written_by_peft_loads(tmp_path):
    from peft import PrefixTuningConfig

    config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, prefix_projection=True)
    theirs, folder = _peft_folder(tmp_path, config)
    ours = AdaptedModel.from_pretrained(tiny_model("llama"), layout_of(tiny_model("llama")), folder).eval()
    # PEFT saves the prefixes its MLP computed: they load as plain prefixes
    assert ours.adapter.name == "prefix" and not ours.adapter.config.prefix_projection
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=x).logits, theirs(input_ids=x).logits, rtol=0, atol=1e-5)


def test_ptuning_folder_written_by_peft_is_refused_with_the_way_out(tmp_path):
    from peft import PromptEncoderConfig

    _, folder = _peft_folder(tmp_path, PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    with pytest.raises(AdapterError, match='set "peft_type": "PROMPT_TUNING" in its adapter_config.json'):
        AdaptedModel.from_pretrained(tiny_model("llama"), layout_of(tiny_model("llama")), folder)
