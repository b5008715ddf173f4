"""The attention of a CPU training run (lladapt.training.attention): causal queries in chunks give
transformers' SDPA results, a call that is not plainly causal keeps transformers' own, and a bf16
run without AMX computes it in bf16 matmuls with an fp32 softmax (within bf16's rounding of fp32
SDPA); the model is set back afterwards."""

from __future__ import annotations

import pytest
import torch

from lladapt.testing import tiny_model
from lladapt.training import attention
from lladapt.training import precision as precision_mod
from lladapt.training.precision import Precision
from tests.training_support import tiny_trainable, two_steps


def _sdpa_calls(monkeypatch):
    """(query rows, output dtype) of every call into torch's SDPA."""
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(query, *args, **kwargs):
        out = real(query, *args, **kwargs)
        seen.append((query.shape[-2], out.dtype))
        return out

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return seen


def _bf16_attention_calls(monkeypatch):
    """The query shapes of every call into the bf16 attention's autograd function."""
    from lladapt.training import attention_bf16

    seen = []
    real = attention_bf16._Attention.apply
    monkeypatch.setattr(attention_bf16._Attention, "apply", lambda *args: seen.append(args[0].shape) or real(*args))
    return seen


def _batch(lengths, total):
    """Right-padded rows of ``lengths`` real tokens in ``total`` positions."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 128, (len(lengths), total), generator=g)
    mask = (torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids * mask, mask


def _logits_and_grads(model, ids, mask):
    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=mask).logits
    (logits * mask[..., None]).square().sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("lengths", [(150, 90, 131), (150, 150, 150)], ids=["padded", "no padding (no mask)"])
def test_chunked_attention_gives_transformers_sdpa_results_and_gradients(monkeypatch, lengths):
    model = tiny_model("llama", max_position_embeddings=256).train()  # 4 query heads, 2 key/value heads
    ids, mask = _batch(lengths, 150)
    want, want_grads = _logits_and_grads(model, ids, mask)
    calls = _sdpa_calls(monkeypatch)
    with attention.training_attention(model, active=True, bf16=False) as implementation:
        assert implementation == attention.CHUNKED == model.config._attn_implementation
        got, got_grads = _logits_and_grads(model, ids, mask)
    assert model.config._attn_implementation == "sdpa"  # set back
    # 150 queries: chunks of 64, 64 and 22 rows in each of the 2 layers
    assert [rows for rows, _ in calls] == [64, 64, 22] * 2
    real = mask.bool()
    assert (got - want)[real].abs().max() < 1e-5
    for name, grad in want_grads.items():
        assert torch.allclose(got_grads[name], grad, atol=1e-5, rtol=1e-4), name


def test_keys_before_the_queries_a_prefix_are_seen_by_every_chunk(monkeypatch):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = torch.nn.Module()
    g = torch.Generator().manual_seed(0)
    query = torch.randn(2, 4, 130, 16, generator=g)
    key, value = (torch.randn(2, 2, 140, 16, generator=g) for _ in range(2))  # 10 prefix keys, grouped heads
    module.num_key_value_groups = 2
    mask = torch.ones(130, 140, dtype=torch.bool).tril(10)[None, None].repeat(2, 1, 1, 1)
    mask[1, :, :, 120:] = False  # the second row's last 10 tokens are padding
    calls = _sdpa_calls(monkeypatch)
    got, _ = attention.sdpa_chunked(module, query, key, value, mask)
    assert [rows for rows, _ in calls] == [64, 64, 2]
    want, _ = sdpa_attention_forward(module, query, key, value, mask)
    assert torch.allclose(got[0], want[0], atol=1e-6) and torch.allclose(got[1, :110], want[1, :110], atol=1e-6)


def test_a_call_that_is_not_plainly_causal_keeps_transformers_sdpa(monkeypatch):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = torch.nn.Module()
    g = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 4, 130, 16, generator=g) for _ in range(3))
    causal = torch.ones(130, 130, dtype=torch.bool).tril()[None, None].expand(2, 1, 130, 130)
    calls = _sdpa_calls(monkeypatch)
    attention.sdpa_chunked(module, query, key, value, causal.clone())
    assert [rows for rows, _ in calls] == [64, 64, 2]
    seeing_ahead = causal.clone()
    seeing_ahead[1, 0, 3, 100] = True  # one query sees a later key: the chunks would drop that key
    for mask, kwargs in ((seeing_ahead, {}), (causal, {"dropout": 0.1}), (causal.float(), {})):
        calls.clear()
        torch.manual_seed(1)
        got, _ = attention.sdpa_chunked(module, query, key, value, mask, **kwargs)
        assert [rows for rows, _ in calls] == [130]
        torch.manual_seed(1)
        want, _ = sdpa_attention_forward(module, query, key, value, mask, **kwargs)
        assert torch.equal(got, want)


def _attention_inputs(lengths, total, prefix=0, dtype=torch.float32):
    """SmolLM2's head layout (9 query heads sharing 3 key/value heads of 64) over right-padded
    rows, ``prefix`` keys before the queries, and the causal boolean mask transformers passes."""
    g = torch.Generator().manual_seed(5)
    rows = len(lengths)
    query = torch.randn(rows, 9, total, 64, generator=g).to(dtype).requires_grad_()
    key, value = (torch.randn(rows, 3, prefix + total, 64, generator=g).to(dtype).requires_grad_() for _ in range(2))
    real = torch.arange(prefix + total)[None, :] < prefix + torch.tensor(lengths)[:, None]
    mask = torch.ones(total, prefix + total, dtype=torch.bool).tril(prefix)[None, None] & real[:, None, None, :]
    return query, key, value, mask


@pytest.mark.parametrize(("lengths", "prefix"), [((150, 90, 131), 0), ((40, 40), 0), ((70, 33), 10)],
                         ids=["padded", "short, no padding", "prefix keys"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bf16_attention_gives_sdpa_results_and_gradients_within_bf16_rounding(lengths, prefix, dtype):
    from lladapt.training.attention_bf16 import causal_attention_bf16

    query, key, value, mask = _attention_inputs(lengths, max(lengths), prefix, dtype)
    scale = 0.125
    # fp32 SDPA, key/value heads repeated to the query heads
    q, k, v = (t.detach().float().requires_grad_() for t in (query, key, value))
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), attn_mask=mask, scale=scale).transpose(1, 2)
    got = causal_attention_bf16(query, key, value, mask, scale)
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    real = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None])[..., None, None].expand_as(want)
    assert (got.float() - want)[real].abs().max() < 0.03
    grad = torch.randn(want.shape, generator=torch.Generator().manual_seed(6)) * real
    want_grads = torch.autograd.grad(want, (q, k, v), grad)
    got_grads = torch.autograd.grad(got, (query, key, value), grad.to(got.dtype))
    for name, g_got, g_want in zip("qkv", got_grads, want_grads, strict=True):
        assert g_got.dtype == dtype, name
        # within bf16's rounding of the scores, the probabilities and the matmuls' inputs
        assert (g_got.float() - g_want).abs().max() < 0.02 * g_want.abs().max(), name


def test_a_query_that_sees_no_key_gives_finite_values_and_no_gradient():
    from lladapt.training.attention_bf16 import causal_attention_bf16

    query, key, value, mask = _attention_inputs((6, 6), 6)
    mask = mask.clone()
    mask[1, :, :2] = False  # the second row's first two queries see nothing (left padding)
    out = causal_attention_bf16(query, key, value, mask, 0.125)
    grad = torch.ones_like(out)
    grad[1, :2] = 0  # padding's outputs get no gradient from the loss
    out.backward(grad)
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(t.grad).all() for t in (query, key, value))
    assert query.grad[1, :, :2].abs().max() == 0


def test_bf16_attention_sends_a_call_that_is_not_plainly_causal_or_not_under_autocast_to_fp32_sdpa(monkeypatch):
    query, key, value, mask = _attention_inputs((130, 130), 130)
    module = torch.nn.Module()
    module.num_key_value_groups = 3
    calls = _sdpa_calls(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = attention.attention_in_bf16(module, query, key, value, mask, scaling=0.125)
        assert calls == [] and out.dtype == torch.bfloat16
        seeing_ahead = mask.clone()
        seeing_ahead[1, 0, 3, 100] = True
        out, _ = attention.attention_in_bf16(module, query, key, value, seeing_ahead, scaling=0.125)
    assert calls == [(130, torch.float32)] and out.dtype == torch.float32
    calls.clear()  # outside autocast (the fp32 model run in a checkpoint's callback): fp32 chunks
    out, _ = attention.attention_in_bf16(module, query, key, value, mask, scaling=0.125)
    assert calls == [(64, torch.float32), (64, torch.float32), (2, torch.float32)] and out.dtype == torch.float32


def test_bf16_attention_in_a_model_under_autocast_then_sets_the_model_back(monkeypatch):
    model = tiny_trainable()
    ids = torch.tensor([[5, 9, 17, 3, 44, 8], [0, 0, 12, 7, 30, 2]])  # the second row left-padded
    mask = (ids != 0).long()
    sdpa = _sdpa_calls(monkeypatch)
    ours = _bf16_attention_calls(monkeypatch)
    with torch.no_grad():
        fp32_logits = model(input_ids=ids, attention_mask=mask).logits
        sdpa.clear()
        with attention.training_attention(model, active=True, bf16=True) as implementation, \
                torch.autocast("cpu", dtype=torch.bfloat16):
            assert implementation == attention.BF16 == model.config._attn_implementation
            bf16_attn = model(input_ids=ids, attention_mask=mask).logits
    assert sdpa == [] and len(ours) == len(model.model.layers)
    assert model.config._attn_implementation == "sdpa"  # set back
    # within bf16's rounding of the fp32 model; the padded row's real tokens too
    real = mask.bool()
    assert (bf16_attn.float() - fp32_logits)[real].abs().max() < 0.05
    with attention.training_attention(model, active=False, bf16=True) as implementation:
        assert implementation is None and model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize(("mode", "flags", "expected"), [
    ("bf16", {"avx512_bf16"}, attention.BF16), ("bf16", {"avx512_bf16", "amx_bf16"}, None),
    ("no", set(), attention.CHUNKED), ("no", {"amx_bf16"}, attention.CHUNKED),
])
def test_a_cpu_run_chunks_its_attention_and_runs_it_in_bf16_matmuls_under_bf16_without_amx(monkeypatch, mode, flags,
                                                                                   expected):
    monkeypatch.setattr(precision_mod, "cpu_flags", lambda: frozenset(flags))
    with Precision(mode, torch.device("cpu")).attention(tiny_trainable()) as implementation:
        assert implementation == expected
    with Precision(mode, torch.device("meta")).attention(tiny_trainable()) as implementation:
        assert implementation is None  # another device keeps its attention


def test_a_cpu_bf16_run_trains_with_bf16_attention_and_sets_the_model_back(monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    model = tiny_trainable()
    sdpa = _sdpa_calls(monkeypatch)
    ours = _bf16_attention_calls(monkeypatch)
    two_steps(model)
    assert sdpa == [] and len(ours) == 2 * 2 * len(model.model.layers)
    assert model.config._attn_implementation == "sdpa"
