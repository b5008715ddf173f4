"""The rotary embedding of a CPU training run in one pass each way (lladapt.training.rotary): the
same outputs and gradients as transformers' function, installed only where it checks out equal,
used by a CPU run, and transformers' own put back afterwards."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.models.gptj import modeling_gptj
from transformers.models.llama import modeling_llama

from lladapt.testing import tiny_model
from lladapt.training import loop, rotary
from tests.training_support import tiny_trainable, two_steps


def _rotated(function, dtype, unsqueeze_dim=1, llama_angles=True):
    """Outputs and input gradients of ``function`` on queries and keys in ``dtype`` (views of
    projections, as LLaMA's attention makes them) with fp32 cos/sin: LLaMA's (the two halves
    the same angles) or random values whose halves differ."""
    g = torch.Generator().manual_seed(0)
    q_proj = torch.randn(2, 7, 3 * 8, generator=g).to(dtype).requires_grad_()
    k_proj = torch.randn(2, 7, 1 * 8, generator=g).to(dtype).requires_grad_()
    q, k = q_proj.view(2, 7, 3, 8), k_proj.view(2, 7, 1, 8)
    if unsqueeze_dim == 1:
        q, k = q.transpose(1, 2), k.transpose(1, 2)
    angles = torch.randn(2, 7, 4, generator=g).repeat(1, 1, 2)
    cos, sin = (angles.cos(), angles.sin()) if llama_angles else (torch.randn(2, 7, 8, generator=g) for _ in "cs")
    q_out, k_out = function(q, k, cos, sin, unsqueeze_dim=unsqueeze_dim)
    weights = torch.randn(q_out.shape, generator=g)
    (q_out * weights).sum().add(k_out.square().sum()).backward()
    return q_out, k_out, q_proj.grad, k_proj.grad


@pytest.mark.parametrize("llama_angles", [True, False], ids=["llama cos-sin", "halves of their own"])
@pytest.mark.parametrize("unsqueeze_dim", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_one_pass_gives_transformers_rotary_outputs_and_gradients(dtype, unsqueeze_dim, llama_angles):
    original = modeling_llama.apply_rotary_pos_emb
    want = _rotated(original, dtype, unsqueeze_dim, llama_angles)
    got = _rotated(rotary._in_one_pass(original), dtype, unsqueeze_dim, llama_angles)
    for w, g, bf16 in zip(want, got, (False, False, True, True), strict=True):
        assert w.dtype == g.dtype and w.shape == g.shape
        # outputs in fp32 (bf16 projections times fp32 cos/sin); bf16 gradients within two units (the
        # original rounds its two parts to bf16 and adds them in bf16: three roundings to one)
        rtol, atol = (2 ** -6, 1e-2) if bf16 and dtype is torch.bfloat16 else (1e-6, 1e-6)
        assert torch.allclose(w.float(), g.float(), rtol=rtol, atol=atol), (w.float() - g.float()).abs().max()


def test_a_partial_rotary_or_another_call_goes_to_the_original():
    calls = []

    def original(*args, **kwargs):
        calls.append(len(args))
        return "original"

    replacement = rotary._in_one_pass(original)
    q = torch.zeros(1, 2, 3, 8)
    assert replacement(q, q, torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)) == "original"  # cos covers half a head
    assert replacement(q, q, torch.zeros(1, 3, 8), torch.zeros(1, 3, 8), torch.zeros(3)) == "original"  # position ids
    assert replacement(q, q, torch.zeros(1, 3, 8), sin=torch.zeros(1, 3, 8)) == "original"
    assert calls == [4, 5, 3]


def test_a_cpu_run_uses_it_for_llama_and_puts_transformers_function_back(monkeypatch):
    original = modeling_llama.apply_rotary_pos_emb
    model = tiny_trainable()
    reference = copy.deepcopy(model)
    with monkeypatch.context() as patch:  # the reference run keeps transformers' function
        patch.setattr(loop, "rotary_in_one_pass", lambda m, active: rotary.rotary_in_one_pass(m, False))
        two_steps(reference, precision="fp32")
    calls = []
    real = rotary._function()
    monkeypatch.setattr(rotary, "_FUNCTION", type("Spy", (real,), {"apply": classmethod(
        lambda cls, *a: calls.append(a[0].shape) or real.apply(*a))}))
    two_steps(model, precision="fp32")
    # the check on a small input (heads of 8), then 2 steps x 2 micro-batches x layers (heads of 16)
    assert calls[:2] == [(2, 3, 5, 8), (2, 5, 3, 8)]
    assert [shape[-1] for shape in calls[2:]] == [16] * 2 * 2 * len(model.model.layers)
    assert modeling_llama.apply_rotary_pos_emb is original  # put back
    for (name, a), b in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), tiny_trainable().parameters(), strict=True))


def test_a_layout_that_computes_otherwise_keeps_its_own():
    model = tiny_model("gptj")  # interleaved rotary, (tensor, sin, cos)
    original = modeling_gptj.apply_rotary_pos_emb
    with rotary.rotary_in_one_pass(model, active=True) as replaced:
        assert replaced == 0 and modeling_gptj.apply_rotary_pos_emb is original
    with rotary.rotary_in_one_pass(tiny_trainable(), active=True) as replaced:
        assert replaced == 1 and modeling_llama.apply_rotary_pos_emb is not modeling_llama.apply_rotary_pos_emb.original
    with rotary.rotary_in_one_pass(tiny_trainable(), active=False) as replaced:
        assert replaced == 0
