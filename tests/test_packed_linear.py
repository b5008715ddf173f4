"""Frozen Linear layers on weights packed for oneDNN (lladapt.training.packed_linear): the same
outputs and input gradients as ``F.linear``, only plain frozen layers in the run's dtype, set back
afterwards, and used by a CPU run only where it was measured."""

from __future__ import annotations

import copy

import pytest
import torch

from lladapt.testing import tiny_model
from lladapt.training import packed_linear
from lladapt.training import precision as precision_mod
from lladapt.training.precision import FrozenInBf16, Precision
from tests.training_support import tiny_trainable, two_steps

pytestmark = pytest.mark.skipif(not packed_linear.available(), reason="this torch has no oneDNN linear ops")

# every frozen projection of the tiny llama: q, k, v, o, gate, up, down in each layer (its output
# head, untied here, is left to the chunked loss and never packed)
PROJECTIONS = 7 * len(tiny_model("llama").model.layers)


def _logits_and_input_grad(model, embeds, autocast):
    embeds = embeds.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(inputs_embeds=embeds).logits.float()
    (logits * torch.linspace(-1, 1, logits.shape[-1])).sum().backward()
    return logits.detach(), embeds.grad


def _relative(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_packed_linears_give_the_outputs_and_input_gradients_of_f_linear(dtype):
    model = tiny_model("llama").requires_grad_(False)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not model.lm_head:
            module.to(dtype)  # as the run holds them (bf16: FrozenInBf16)
    embeds = torch.randn(2, 40, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    plain = _logits_and_input_grad(model, embeds, autocast=dtype is torch.bfloat16)
    with packed_linear.packed_frozen_linears(model, dtype) as count:
        assert count == PROJECTIONS
        packed = _logits_and_input_grad(model, embeds, autocast=dtype is torch.bfloat16)
    torch.testing.assert_close(packed[0], plain[0], rtol=1e-5, atol=1e-5)
    if dtype is torch.float32:
        torch.testing.assert_close(packed[1], plain[1], rtol=1e-5, atol=1e-5)
    else:  # q/k/v's gradient is summed before its one rounding to bf16 (the module's docstring)
        assert _relative(packed[1], plain[1]) < 1e-3
    assert not any("forward" in vars(m) for m in model.modules())  # set back


def test_an_attention_s_q_k_v_are_one_product_forward_and_backward():
    """One stacked product per attention for q, k and v, each layer's output bit for bit its own
    product's, the input gradient the fp32 sum of the three rounded once to bf16; a layer called
    on another input gets its own output."""
    model = tiny_model("llama").requires_grad_(False).to(torch.bfloat16)
    attention = model.model.layers[0].self_attn
    layers = [attention.q_proj, attention.k_proj, attention.v_proj]
    x = torch.randn(2, 24, model.config.hidden_size, dtype=torch.bfloat16, requires_grad=True)
    grads = [torch.randn(2, 24, m.out_features, dtype=torch.bfloat16) for m in layers]
    applied = []
    real_apply = packed_linear._function().apply
    with packed_linear.packed_frozen_linears(model, torch.bfloat16), pytest.MonkeyPatch.context() as patch:
        patch.setattr(packed_linear._function(), "apply", lambda *a: applied.append(a[3]) or real_apply(*a))
        outputs = [m(x) for m in layers]
        assert applied == [[m.out_features for m in layers]]  # one product for the three
        assert attention.q_proj.forward.packed.kept._input is None  # all taken: the input is let go
        other = x.detach() + 1
        attention.q_proj(other)  # keeps k's and v's outputs for ``other``...
        again = x.detach().clone()  # ...which k, called on another tensor, does not take
        torch.testing.assert_close(attention.k_proj(again), torch.nn.functional.linear(again, attention.k_proj.weight),
                                   rtol=0, atol=0)
        changed = x.detach().clone()
        attention.q_proj(changed)
        changed.add_(1)  # changed in place since: k's output is computed anew
        torch.testing.assert_close(attention.k_proj(changed),
                                   torch.nn.functional.linear(changed, attention.k_proj.weight), rtol=0, atol=0)
    for out, m in zip(outputs, layers, strict=True):
        torch.testing.assert_close(out, torch.nn.functional.linear(x, m.weight), rtol=0, atol=0)
    torch.autograd.backward(outputs, grads)
    expected = sum(g.float() @ m.weight.float() for g, m in zip(grads, layers, strict=True)).to(torch.bfloat16)
    torch.testing.assert_close(x.grad, expected, rtol=2 ** -8, atol=1e-6)


class _Scaled(torch.nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


def test_only_plain_frozen_linears_in_the_dtype_without_a_forward_of_their_own_are_packed():
    frozen, trainable, other_dtype, subclass, hooked, trained_bias = (
        torch.nn.Linear(8, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 8, dtype=torch.bfloat16),
        _Scaled(8, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    for layer in (frozen, other_dtype, subclass, hooked):
        layer.requires_grad_(False)
    trained_bias.weight.requires_grad_(False)
    own_forward = hooked.forward = lambda x: x
    model = torch.nn.Sequential(frozen, trainable, other_dtype, subclass, hooked, trained_bias)
    x = torch.randn(3, 8)
    with packed_linear.packed_frozen_linears(model, torch.float32) as count:
        assert count == 1 and "forward" in vars(frozen)
        torch.testing.assert_close(frozen(x), torch.nn.functional.linear(x, frozen.weight, frozen.bias))
    assert "forward" not in vars(frozen) and hooked.forward is own_forward
    with packed_linear.packed_frozen_linears(model, None) as count:
        assert count == 0


def test_layers_given_their_fp32_weights_back_for_a_moment_compute_as_the_plain_model():
    """Around a checkpoint's ``save`` callback, ``FrozenInBf16.fp32`` puts the fp32 originals
    back in the model; a packed layer then computes on them, as the model it was given."""
    model = tiny_model("llama").requires_grad_(False)
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    expected = model(ids).logits
    with FrozenInBf16(model, active=True) as frozen, packed_linear.packed_frozen_linears(model, torch.bfloat16) as n:
        assert n == PROJECTIONS
        with frozen.fp32():
            torch.testing.assert_close(model(ids).logits, expected, rtol=0, atol=0)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 again outside
            assert not torch.equal(model(ids).logits.float(), expected)


@pytest.mark.parametrize(("mode", "flags", "dtype", "packs"), [
    ("bf16", {"avx512f", "avx512_bf16"}, torch.bfloat16, True), ("bf16", {"avx512f"}, torch.bfloat16, False),
    ("no", {"avx512f"}, torch.float32, True), ("no", {"avx2"}, torch.float32, False),
])
def test_a_cpu_run_packs_where_it_was_measured(monkeypatch, mode, flags, dtype, packs):
    monkeypatch.setattr(precision_mod, "cpu_flags", lambda: frozenset(flags))
    model = tiny_trainable().to(dtype)
    with Precision(mode, torch.device("cpu")).packed_linears(model, active=True) as count:
        assert count == (PROJECTIONS - 4 if packs else 0)  # layer 0's attention projections train
    for device, active in (("cpu", False), ("meta", True)):
        with Precision(mode, torch.device(device)).packed_linears(model, active=active) as count:
            assert count == 0


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_a_run_on_packed_weights_trains_as_one_on_plain_weights(monkeypatch, precision):
    monkeypatch.setattr(precision_mod, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    calls, grads = [], []
    real_call, real_step = packed_linear._PackedForward.__call__, Precision.step
    monkeypatch.setattr(packed_linear._PackedForward, "__call__",
                        lambda self, x: calls.append(1) or real_call(self, x))
    monkeypatch.setattr(Precision, "step", lambda self, optimizer: grads.append(
        [p.grad.clone() for g in optimizer.param_groups for p in g["params"]]) or real_step(self, optimizer))
    model = tiny_trainable()
    plain = copy.deepcopy(model)
    two_steps(model, precision)
    assert len(calls) == 2 * 2 * (PROJECTIONS - 4)  # 2 steps x 2 micro-batches
    monkeypatch.setattr(packed_linear, "available", lambda: False)
    two_steps(plain, precision)
    assert len(calls) == 2 * 2 * (PROJECTIONS - 4)
    packed_grads, plain_grads = grads[0], grads[2]  # the first step's, from the same parameters
    for a, b in zip(packed_grads, plain_grads, strict=True):  # bf16: within its resolution, 2^-7
        assert _relative(a, b) < (2 ** -7 if precision == "bf16" else 1e-6)
    if precision == "fp32":  # (in bf16, AdamW's first steps turn rounding-level differences of
        # near-zero gradients into whole steps of the learning rate)
        for (name, a), b in zip(model.named_parameters(), plain.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    assert not any("forward" in vars(m) for m in model.modules())
