"""The fused LoRA and bottleneck branches (lladapt.plugins.adapters.fused) compute what the eager
modules compute: outputs and gradients equal in fp32 given the same dropout mask, close under bf16
autocast, and the cheaper CPU dropout mask drops at the configured rate."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lladapt.plugins.adapters import fused


def _lora(seed=0, d_in=24, r=4, d_out=20):
    torch.manual_seed(seed)
    a, b = nn.Linear(d_in, r, bias=False), nn.Linear(r, d_out, bias=False)
    nn.init.normal_(b.weight)
    return a, b, torch.randn(3, 7, d_in, requires_grad=True)


def _grads(out, tensors, seed=1):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(out.float(), tensors, g)


def test_fused_low_rank_equals_the_eager_formula_with_the_same_mask():
    a, b, x = _lora()
    drop = torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) < 0.3
    out = fused._LowRank.apply(x, a.weight, b.weight, drop, 2.0 / 0.7, torch.float32)
    ref = b(a(x * ~drop / 0.7)) * 2.0
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
    for got, want in zip(_grads(out, (x, a.weight, b.weight)), _grads(ref, (x, a.weight, b.weight)), strict=True):
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("autocast", [False, True])
def test_fused_lora_without_dropout_matches_the_eager_branch(autocast):
    a, b, x = _lora()
    eager_dropout = nn.Identity()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = fused.lora_delta(x, a, b, eager_dropout, 2.0)
        ref = b(a(x)) * 2.0
    assert out.dtype == ref.dtype
    tol = 2e-2 if autocast else 1e-5
    assert torch.allclose(out.float(), ref.float(), atol=tol, rtol=tol)
    for got, want in zip(_grads(out, (x, a.weight, b.weight)), _grads(ref, (x, a.weight, b.weight)), strict=True):
        assert got.dtype == want.dtype
        assert torch.allclose(got.float(), want.float(), atol=tol * 10, rtol=tol)


@pytest.mark.parametrize("p", [0.05, 0.5])
def test_cpu_dropout_drops_each_element_independently_at_the_configured_rate(p):
    n = 400_000
    sd = (p * (1 - p) / n) ** 0.5
    torch.manual_seed(0)
    drop = fused.drop_mask(torch.Size([n]), p, torch.device("cpu"))
    assert drop.dtype == torch.int64 and bool((drop.diff() > 0).all()) and drop[0] >= 0 and drop[-1] < n
    mask = fused.as_mask(drop, torch.Size([n])).float()
    assert abs(mask.mean().item() - p) < 7 * sd
    assert abs(mask[-n // 10:].mean().item() - p) < 7 * sd * 10**0.5  # drawn to the very end
    after_a_drop = mask[drop[:-1] + 1]  # the element after a dropped one is dropped with p too
    assert abs(after_a_drop.mean().item() - p) < 7 * (p * (1 - p) / after_a_drop.numel()) ** 0.5


def test_cpu_dropout_draws_on_when_its_first_draws_end_short(monkeypatch):
    monkeypatch.setattr(fused, "_MARGIN", -3.0)  # three standard deviations short: almost always
    n = 200_000
    torch.manual_seed(0)
    drop = fused.drop_mask(torch.Size([n]), 0.05, torch.device("cpu"))
    assert bool((drop.diff() > 0).all()) and drop[-1] < n
    assert abs(drop.numel() / n - 0.05) < 7 * (0.05 * 0.95 / n) ** 0.5
    assert drop[-1] > n - 500  # not cut off where the first draws ended (0.95^500: 7e-12)
    assert torch.equal(fused.drop_mask(torch.Size([3, 5]), 1.0, torch.device("cpu")), torch.arange(15))


def test_fused_lora_in_training_mode_drops_inputs_and_rescales_the_kept_ones():
    a, b, x = _lora()
    dropout = nn.Dropout(0.5).train()
    torch.manual_seed(5)
    out = fused.lora_delta(x, a, b, dropout, 1.0)
    torch.manual_seed(5)
    drop = fused.as_mask(fused.drop_mask(x.shape, 0.5, x.device), x.shape)
    assert torch.allclose(out, b(a(x * ~drop / 0.5)), atol=1e-5)
    dropout.eval()
    assert torch.allclose(fused.lora_delta(x, a, b, dropout, 1.0), b(a(x)), atol=1e-5)


@pytest.mark.parametrize("autocast", [False, True])
def test_fused_dropout_leaves_the_input_alone_and_matches_the_formula(autocast):
    a, b, x = _lora()
    before = x.detach().clone()
    dropout = nn.Dropout(0.3).train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        torch.manual_seed(5)
        out = fused.lora_delta(x, a, b, dropout, 2.0)
        torch.manual_seed(5)
        drop = fused.as_mask(fused.drop_mask(x.shape, 0.3, x.device), x.shape)
        ref = b(a(x * ~drop / 0.7)) * 2.0
    assert torch.equal(x.detach(), before)  # the mask is applied to a copy, in fp32 too
    assert 0.2 < drop.float().mean().item() < 0.4
    tol = 4e-2 if autocast else 1e-5  # bf16: one rounding step at outputs up to ~7
    assert out.dtype == ref.dtype and torch.allclose(out.float(), ref.float(), atol=tol, rtol=tol)
    for got, want in zip(_grads(out, (x, a.weight, b.weight)), _grads(ref, (x, a.weight, b.weight)), strict=True):
        assert torch.allclose(got.float(), want.float(), atol=tol * 10, rtol=tol)


def test_fused_bottleneck_matches_the_eager_branch_with_the_same_mask():
    torch.manual_seed(0)
    down, up = nn.Linear(24, 6, bias=False), nn.Linear(6, 24, bias=False)
    nn.init.normal_(up.weight)
    x = torch.randn(2, 5, 24, requires_grad=True)
    dropout = nn.Dropout(0.2).train()
    torch.manual_seed(7)
    out = fused.bottleneck_delta(x, down, up, dropout, torch.nn.functional.silu, 0.5)
    torch.manual_seed(7)
    drop = fused.as_mask(fused.drop_mask(x.shape, 0.2, x.device), x.shape)
    ref = up(torch.nn.functional.silu(down(x * ~drop / 0.8))) * 0.5
    assert torch.allclose(out, ref, atol=1e-5)
    tensors = (x, down.weight, up.weight)
    for got, want in zip(_grads(out, tensors), _grads(ref, tensors), strict=True):
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)


def test_the_switch_and_a_replaced_dropout_module_keep_the_eager_path(monkeypatch):
    assert fused.enabled(nn.Dropout(0.1)) and fused.enabled(nn.Identity())

    class MyDropout(nn.Dropout):
        pass

    assert not fused.enabled(MyDropout(0.1))
    monkeypatch.setenv("LLADAPT_FUSED_ADAPTERS", "0")
    assert not fused.enabled(nn.Dropout(0.1))
