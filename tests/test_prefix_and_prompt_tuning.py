"""Behaviour every prompt-learning adapter (prefix, prompt, P-tuning) shares, on a tiny model of
each built-in family: training touches only the virtual tokens, cached generation equals uncached
greedy decoding token for token, batches with left padding decode like single rows, a save/load
round trip is bit-identical, and PEFT loads what lladapt saves."""

from __future__ import annotations

import json

import pytest
import torch
from assets import load_stories260k
from run_support import rescored

import lladapt
from lladapt.adapters.model import AdaptedModel, attach_from_config
from lladapt.testing import FAMILIES, tiny_model

#: PEFT's own warnings (transformers deprecations it trips, its position-id notice).
pytestmark = [
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:Position ids are not supported:UserWarning"),
]

#: adapter configs under test: every adapter, and each encoder variant.
ADAPTERS = {
    "prefix": {"name": "prefix"},
    "prefix-mlp": {"name": "prefix", "prefix_projection": True, "encoder_hidden_size": 24},
    "prompt": {"name": "prompt", "num_virtual_tokens": 6},
    "ptuning-mlp": {"name": "ptuning", "num_virtual_tokens": 5},
    "ptuning-lstm": {"name": "ptuning", "encoder": "lstm", "encoder_hidden_size": 16},
}
PAD = 0


def layout_of(model):
    return lladapt.get_registry("backbone").get(model.config.model_type)().layout(model.config)


def adapted(family: str, adapter: str, seed: int = 0) -> AdaptedModel:
    model = tiny_model(family, seed=seed)
    torch.manual_seed(seed + 1)
    return attach_from_config(model, layout_of(model), dict(ADAPTERS[adapter]))


def greedy(model, input_ids: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding the slow way: the whole sequence through the model at every step (a row
    that wrote EOS is padded from then on, as ``generate`` does)."""
    eos = model.generation_config.eos_token_id
    sequence = input_ids
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=sequence, use_cache=False).logits[:, -1]
        token = logits.argmax(-1).masked_fill(done, PAD)
        done |= token == eos
        sequence = torch.cat([sequence, token[:, None]], dim=1)
        if done.all():
            break
    return sequence


def generate(model, input_ids, attention_mask=None, **kwargs):
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    return model.generate(
        input_ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=PAD, **kwargs
    )


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.mark.parametrize("adapter", list(ADAPTERS))
def test_training_touches_only_the_virtual_tokens(family, adapter):
    model = adapted(family, adapter)
    model.train()
    ids = torch.randint(3, 128, (2, 7), generator=torch.Generator().manual_seed(0))
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids)
    out.loss.backward()
    with_grad = {n for n, p in model.base_model.named_parameters() if p.grad is not None}
    assert with_grad == set(model.parameter_names)
    assert all(n.startswith("lladapt_virtual_tokens.") for n in with_grad)
    assert all(torch.count_nonzero(model.base_model.get_parameter(n).grad) for n in with_grad)
    frozen = [p for n, p in model.base_model.named_parameters() if n not in with_grad]
    assert frozen and not any(p.requires_grad for p in frozen)

    # the virtual tokens change the model's output
    model.eval()
    base = tiny_model(family)
    with torch.no_grad():
        ours = model(input_ids=ids).logits[:, -ids.shape[1]:]
        theirs = base(input_ids=ids).logits
    assert not torch.allclose(ours, theirs, atol=1e-3)


@pytest.mark.parametrize("adapter", list(ADAPTERS))
def test_cached_generation_equals_uncached_greedy_decoding(family, adapter):
    model = adapted(family, adapter).eval()
    ids = torch.randint(3, 128, (2, 5), generator=torch.Generator().manual_seed(1))
    slow = greedy(model, ids, 6)
    assert torch.equal(generate(model, ids, use_cache=True), slow)
    assert torch.equal(generate(model, ids, use_cache=False), slow)


@pytest.mark.parametrize("adapter", ["prefix", "prompt"])
def test_beam_search_same_with_and_without_cache(family, adapter):
    model = adapted(family, adapter).eval()
    ids = torch.randint(3, 128, (1, 4), generator=torch.Generator().manual_seed(2))
    cached = generate(model, ids, num_beams=3, use_cache=True)
    assert torch.equal(cached, generate(model, ids, num_beams=3, use_cache=False))


@pytest.mark.parametrize("adapter", ["prefix", "prompt"])
def test_static_cache_is_refused_with_the_way_out(adapter):
    model = adapted("llama", adapter).eval()
    ids = torch.randint(3, 128, (1, 4), generator=torch.Generator().manual_seed(2))
    with pytest.raises(lladapt.AdapterError, match=r"need a cache that grows \(StaticCache has a fixed size"):
        generate(model, ids, cache_implementation="static")


@pytest.mark.parametrize("adapter", ["prefix", "prompt", "ptuning-mlp"])
def test_left_padded_batch_decodes_like_single_rows(family, adapter):
    model = adapted(family, adapter).eval()
    long, short = [5, 6, 7, 8, 9], [10, 11, 12]
    batch = torch.tensor([long, [PAD, PAD, *short]])
    mask = torch.tensor([[1] * 5, [0, 0, 1, 1, 1]])
    together = generate(model, batch, mask)
    alone_long = generate(model, torch.tensor([long]))
    alone_short = generate(model, torch.tensor([short]))
    assert torch.equal(together[0, 5:], alone_long[0, 5:])
    assert torch.equal(together[1, 5:], alone_short[0, 3:])
    # a plain forward places the padded row's tokens as generate does
    with torch.no_grad():
        padded = model(input_ids=batch, attention_mask=mask).logits[1, -3:]
        single = model(input_ids=torch.tensor([short])).logits[0, -3:]
    torch.testing.assert_close(padded, single, rtol=0, atol=1e-5)


@pytest.mark.parametrize("adapter", list(ADAPTERS))
def test_save_load_round_trip_is_bit_identical(tmp_path, family, adapter):
    model = adapted(family, adapter).eval()
    with torch.no_grad():  # move off the initial values so a load that did nothing would show
        for param in model.trainable_parameters():
            param.add_(torch.randn_like(param) * 0.1)
    model.save_adapter(tmp_path / "a")
    again = AdaptedModel.from_pretrained(tiny_model(family), model.layout, tmp_path / "a").eval()
    assert again.adapter.config == model.adapter.config
    assert again.parameter_names == model.parameter_names
    ids = torch.randint(3, 128, (2, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids).logits, model(input_ids=ids).logits)


def assert_peft_agrees(model, base, folder, ids: torch.Tensor) -> None:
    """``peft.PeftModel.from_pretrained(base, folder)`` gives ``model``'s logits within 1e-5, and
    our ``generate`` decodes as greedy decoding through PEFT's forward does, token for token.

    The reference is PEFT's forward, not PEFT's ``generate``: PEFT 0.21.2 hands its prefix cache
    over as ``past_key_values`` while transformers >= 5.24 ``generate`` passes its own empty
    ``cache``, which wins, so PEFT's prefix-tuning generation silently ignores the prefix."""
    peft = pytest.importorskip("peft")
    theirs = peft.PeftModel.from_pretrained(base, str(folder)).eval()
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask).logits
        peft_logits = theirs(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ours, peft_logits, rtol=0, atol=1e-5)
    kwargs = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=PAD)
    assert torch.equal(model.generate(ids, **kwargs), greedy(theirs, ids, 8))


@pytest.mark.parametrize("adapter", ["prefix", "prefix-mlp", "prompt", "ptuning-mlp"])
def test_peft_loads_what_lladapt_saves(tmp_path, family, adapter):
    model = adapted(family, adapter).eval()
    model.save_adapter(tmp_path / "a")
    ids = torch.randint(3, 128, (2, 6), generator=torch.Generator().manual_seed(4))
    assert_peft_agrees(model, tiny_model(family), tmp_path / "a", ids)


@pytest.mark.parametrize("adapter", ["prefix", "prompt", "ptuning-mlp"])
def test_half_precision_model_with_float32_virtual_tokens(adapter):
    """The trainer keeps fp32 master copies of the trainable tensors of a bf16/fp16 model: the
    virtual tokens are cast to the model's dtype on the way in."""
    model = tiny_model("llama").to(torch.bfloat16)
    model = attach_from_config(model, layout_of(model), dict(ADAPTERS[adapter]))
    assert {p.dtype for p in model.trainable_parameters()} == {torch.bfloat16}
    for param in model.trainable_parameters():
        param.data = param.data.float()
    x = torch.randint(3, 128, (2, 5), generator=torch.Generator().manual_seed(7))
    model.train()
    model(input_ids=x, labels=x).loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.trainable_parameters())
    model.eval()
    assert torch.equal(generate(model, x), greedy(model, x, 6))


@pytest.mark.parametrize("adapter", ["prefix", "prompt"])
def test_unload_restores_the_base_model(family, adapter):
    model = adapted(family, adapter).eval()
    base = model.unload()
    assert not hasattr(base, "lladapt_virtual_tokens")
    ids = torch.randint(3, 128, (1, 5), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(base(input_ids=ids).logits, tiny_model(family)(input_ids=ids).logits)


# --------------------------------------------------------------------------- stories260k


@pytest.mark.parametrize("adapter", ["prefix", "prefix-mlp", "prompt", "ptuning-mlp", "ptuning-lstm"])
def test_peft_interop_on_stories260k(tmp_path, stories260k, adapter):
    """A real GQA LLaMA (8 heads, 4 key/value heads): PEFT loads lladapt's folder and gives the
    same logits within 1e-5 and the same greedy generation."""
    base = load_stories260k(stories260k).model
    torch.manual_seed(0)
    model = attach_from_config(base, layout_of(base), dict(ADAPTERS[adapter])).eval()
    model.save_adapter(tmp_path / "a")
    ids = torch.randint(3, 512, (2, 12), generator=torch.Generator().manual_seed(6))
    assert_peft_agrees(model, load_stories260k(stories260k).model, tmp_path / "a", ids)


def test_lladapt_run_trains_evaluates_and_reloads_prefix(stories260k, tmp_path, logits_when_saved):
    """The whole pipeline with the adapter's own learning rate (3e-2): the loss falls, batched
    left-padded evaluation runs, and the saved folder reloads to the logits the model had when
    training ended."""
    from lladapt.api import run
    from lladapt.config import ModelSection
    from lladapt.models.loading import load_model

    out = tmp_path / "run"
    config = {
        "model": str(stories260k),
        "adapter": "prefix",
        "data": {"train": [{"name": "arith", "limit": 16}], "cutoff_len": 64},
        "train": {"max_steps": 6, "batch_size": 4, "micro_batch_size": 2, "warmup_steps": 0,
                  "logging_steps": 1, "save_steps": 0},
        "eval": {"datasets": [{"name": "arith", "split": "test"}], "limit": 3, "max_new_tokens": 4,
                 "batch_size": 3},
        "output_dir": str(out),
    }
    results = run(config, echo=lambda _: None)
    assert results["train"]["final_loss"] < results["train"]["first_loss"]
    [scored] = results["eval"]
    counts = rescored(out / "eval" / "arith-test.jsonl", "arith")
    assert {k: scored[k] for k in counts} == counts and sum(counts.values()) == scored["total"] == 3
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["lr"] == pytest.approx(3e-2)  # the rate step 1 used: no warm-up, decay comes after

    trained = logits_when_saved.by_folder["adapter"]
    fresh = load_model(ModelSection(source=str(stories260k)))
    reloaded = AdaptedModel.from_pretrained(fresh.model, fresh.layout, out / "adapter").eval()
    ids = logits_when_saved.ids
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, trained, rtol=0, atol=1e-6)
        plain = load_model(ModelSection(source=str(stories260k))).model(input_ids=ids).logits
    assert not torch.allclose(trained, plain, atol=1e-4)  # training changed the model
