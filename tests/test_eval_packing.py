"""Linear layers on oneDNN's prepacked weights while evaluating (:mod:`lladapt.evaluation.packing`):
the same logits and greedy tokens as PyTorch's default kernels, a row's result independent of the
rows beside it, a released weight rebuilt bit for bit, tied and trainable weights kept, autograd
and changed weights served by the default kernel, everything undone after an error, and the
evaluator packing only when ``eval.pack_weights`` says so."""

from __future__ import annotations

import functools

import pytest
import torch
from adapters_support import layout_of, one_torch_thread, randomise  # noqa: F401
from eval_support import ADAPTERS, answers, run_entry, stories

from lladapt import testing
from lladapt.adapters.model import attach_from_config
from lladapt.config import RunConfig
from lladapt.evaluation import packing
from lladapt.evaluation.packing import packed_linears
from lladapt.evaluation.suite import evaluation_for

pytestmark = pytest.mark.skipif(not packing.available(), reason="this torch build has no oneDNN linear")


def _linears(model):
    return [m for m in model.modules() if type(m) is torch.nn.Linear]


def _weights(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("family", ["llama", "opt"])  # OPT's linear layers have biases
def test_packed_layers_give_the_default_kernels_logits_and_greedy_tokens(family):
    model = testing.tiny_model(family, tie_word_embeddings=False)
    ids = torch.randint(3, model.config.vocab_size, (4, 9))
    before = _weights(model)
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
        greedy = model.generate(ids, max_new_tokens=8, do_sample=False)
        with packed_linears(model) as count:
            assert count == len(_linears(model)) > 0
            # every weight was released: the default kernel could not have computed these
            assert all(m.weight.numel() == 0 for m in _linears(model))
            logits = model(input_ids=ids).logits
            tokens = model.generate(ids, max_new_tokens=8, do_sample=False)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(tokens, greedy)
    after = _weights(model)
    assert all(torch.equal(after[name], before[name]) for name in before)  # rebuilt bit for bit
    assert not any("forward" in vars(m) for m in _linears(model))


def test_a_rows_result_does_not_depend_on_the_rows_beside_it():
    layer = torch.nn.Linear(576, 1536).requires_grad_(False)
    x = torch.randn(32, 1, 576)
    with torch.inference_mode(), packed_linears(layer):
        full = layer(x)
        for rows in (1, 2, 5, 15, 16, 17):
            assert torch.equal(layer(x[:rows]), full[:rows]), rows


def test_a_tied_weight_is_kept_and_a_changed_kept_weight_is_followed():
    model = testing.tiny_model("llama", tie_word_embeddings=True)
    head = model.lm_head
    x = torch.randn(3, model.config.hidden_size)
    with torch.no_grad(), packed_linears(model):
        assert head.weight.numel() > 0  # kept: the embeddings share it
        assert model.model.layers[0].mlp.up_proj.weight.numel() == 0  # an unshared one is released
        before = head(x)
        torch.testing.assert_close(before, torch.nn.functional.linear(x, head.weight), rtol=1e-5, atol=1e-5)
        head.weight.mul_(2)  # changed in place after packing: the packed copy is stale
        assert torch.equal(head(x), torch.nn.functional.linear(x, head.weight))


def test_autograd_goes_through_the_default_kernel_and_a_released_weight_takes_no_gradient():
    layer = torch.nn.Linear(16, 8).requires_grad_(False)
    x = torch.randn(4, 16, requires_grad=True)
    layer(x).sum().backward()
    expected, x.grad = x.grad.clone(), None
    with packed_linears(layer):
        layer(x).sum().backward()
    assert torch.equal(x.grad, expected)
    layer.requires_grad_(True)
    with packed_linears(layer), pytest.raises(RuntimeError, match="packed for evaluation.*takes no gradient"):
        layer(x)


def test_an_error_inside_leaves_the_model_as_it_was():
    model = testing.tiny_model("llama", tie_word_embeddings=False)
    before = _weights(model)
    with pytest.raises(RuntimeError, match="boom"), packed_linears(model):
        raise RuntimeError("boom")
    after = _weights(model)
    assert all(torch.equal(after[name], before[name]) for name in before)
    assert not any("forward" in vars(m) for m in _linears(model))


def test_other_dtypes_and_layer_classes_are_left_alone():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8, bias=False).to(torch.bfloat16), torch.nn.Bilinear(4, 4, 4))

    class Custom(torch.nn.Linear):
        pass

    model.append(Custom(8, 8))
    with packed_linears(model) as count:
        assert count == 0
    with packed_linears(testing.tiny_model("llama"), enabled=False) as count:
        assert count == 0


def test_the_evaluator_packs_as_eval_pack_weights_says(stories260k):
    model, tokenizer = (loaded := stories(stories260k)).model, loaded.tokenizer
    seen = []  # the weight a layer holds while the evaluator runs it: released (0) when packed
    mlp = model.model.layers[0].mlp
    layer = mlp.up_proj
    mlp.register_forward_pre_hook(lambda module, args: seen.append(layer.weight.numel()))
    packed = run_entry(model, tokenizer, batch_size=4, max_new_tokens=12)
    assert seen and set(seen) == {0}
    seen.clear()
    plain = run_entry(model, tokenizer, batch_size=4, max_new_tokens=12, pack_weights=False)
    assert set(seen) == {layer.weight.numel()} and layer.weight.numel() > 0
    assert answers(packed) == answers(plain)
    off = RunConfig.model_validate({"model": {"source": "x"}, "eval": {"pack_weights": False}})
    assert evaluation_for(off, 12).pack_weights is False
    assert evaluation_for(RunConfig.model_validate({"model": {"source": "x"}}), 12).pack_weights is True


@pytest.mark.parametrize("kind", ["series", "lora"])
def test_an_adapters_layers_are_left_alone_and_its_hosts_keep_their_weights(kind):
    base = testing.tiny_model("llama", tie_word_embeddings=False)
    model = attach_from_config(base, layout_of(base), ADAPTERS[kind])
    randomise(model, std=0.05)
    adapter = {id(t) for _, t in model.named_adapter_tensors()}
    ids = torch.randint(3, base.config.vocab_size, (3, 7))
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
        with packed_linears(model) as count:
            layers = _linears(base)
            own = [m for m in layers if id(m.weight) in adapter]
            hosts = [m for m in layers if m._forward_hooks or m._forward_pre_hooks]
            assert own and hosts and count == len(layers) - len(own)
            assert not any("forward" in vars(m) for m in own)
            assert all("forward" in vars(m) and m.weight.numel() > 0 for m in hosts)
            logits = model(input_ids=ids).logits
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def _sibling_groups(model):
    """The packed groups of ``model``'s layers (while packed): each layer's group as its forward's owner."""
    return {id(m.forward.func.__self__): m.forward.func.__self__ for m in _linears(model)
            if isinstance(vars(m).get("forward"), functools.partial)}


@pytest.mark.parametrize("family", ["llama", "opt"])  # OPT's q/k/v have biases
def test_sibling_layers_share_one_product_and_give_the_same_bits_as_packed_alone(family, monkeypatch):
    model = testing.tiny_model(family, tie_word_embeddings=False)
    ids = torch.randint(3, model.config.vocab_size, (4, 9))
    before = _weights(model)
    with torch.inference_mode():
        with packed_linears(model) as count:
            assert count == len(_linears(model))
            sizes = sorted(len(group.modules) for group in _sibling_groups(model).values())
            layers = model.config.num_hidden_layers
            # q/k/v in every layer; LLaMA's gate/up too
            assert sizes.count(3) == layers and sizes.count(2) == (layers if family == "llama" else 0)
            logits = model(input_ids=ids).logits
            tokens = model.generate(ids, max_new_tokens=8, do_sample=False)
        monkeypatch.setattr(packing, "SIBLINGS", ())
        with packed_linears(model):
            assert max(len(group.modules) for group in _sibling_groups(model).values()) == 1
            alone = model(input_ids=ids).logits
            alone_tokens = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(logits, alone) and torch.equal(tokens, alone_tokens)
    after = _weights(model)
    assert all(torch.equal(after[name], before[name]) for name in before)  # rebuilt bit for bit
    pointers = [p.untyped_storage().data_ptr() for p in model.parameters()]
    assert len(set(pointers)) == len(pointers)  # each weight its own storage again (safetensors refuses shared ones)


def test_a_sibling_called_with_another_input_computes_its_own_product():
    attention = testing.tiny_model("llama").model.layers[0].self_attn
    x, y = torch.randn(2, 3, attention.q_proj.in_features), torch.randn(2, 3, attention.q_proj.in_features)
    expected = {name: getattr(attention, name)(t) for name, t in (("q_proj", x), ("k_proj", y), ("v_proj", x))}
    with torch.inference_mode(), packed_linears(attention):
        assert len(next(iter(_sibling_groups(attention).values())).modules) == 3
        got = {name: getattr(attention, name)(t) for name, t in (("q_proj", x), ("k_proj", y), ("v_proj", x))}
        again = attention.v_proj(x)  # its kept output was taken: computed anew, the same
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-5)
    assert torch.equal(again, got["v_proj"])


def test_a_sibling_whose_input_changed_in_place_since_computes_its_own_product():
    attention = testing.tiny_model("llama").model.layers[0].self_attn
    x = torch.randn(2, 3, attention.q_proj.in_features)
    with torch.no_grad():
        with packed_linears(attention):
            attention.q_proj(x)  # keeps k's and v's outputs of x as it is now
            x.mul_(2)
            got = attention.k_proj(x)
        expected = attention.k_proj(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_hooked_sibling_stays_alone_and_autograd_reads_a_grouped_layers_own_rows():
    attention = testing.tiny_model("llama").model.layers[0].self_attn.requires_grad_(False)
    attention.q_proj.register_forward_hook(lambda module, args, out: out)
    x = torch.randn(2, 3, attention.k_proj.in_features, requires_grad=True)
    attention.v_proj(x).sum().backward()
    expected, x.grad = x.grad.clone(), None
    with packed_linears(attention):
        groups = sorted(len(group.modules) for group in _sibling_groups(attention).values())
        assert groups == [1, 1, 2]  # q alone (kept for its hook), k/v together, o alone
        attention.v_proj(x).sum().backward()
    assert torch.equal(x.grad, expected)
