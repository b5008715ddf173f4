"""The trainer's speed levers give the same training: the chunked head + cross-entropy equals the
plain loss and gradients, ``precision: auto`` picks bf16 only where the CPU computes it natively."""

from __future__ import annotations

import pytest
import torch

from lladapt.common import hf_compat
from lladapt.data.tokenization import IGNORE_INDEX
from lladapt.training import loop
from lladapt.training import loss as loss_mod
from lladapt.training import precision as precision_mod
from lladapt.training.loop import backward_step
from lladapt.training.loss import chunked_summed_loss, summed_loss
from lladapt.training.precision import Precision, mixed_precision
from tests.training_support import random_examples, tiny_trainable, two_steps


def _step(examples, chunked, normalization, autocast="no"):
    model = tiny_trainable()
    micro = [examples[i : i + 4] for i in range(0, len(examples), 4)]
    loss = backward_step(model, Precision(autocast, torch.device("cpu")), micro, pad_token_id=0,
                         normalization=normalization, chunked_loss=chunked)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss, grads, model


@pytest.mark.parametrize("normalization", ["tokens", "micro_batch"])
def test_chunked_loss_gives_the_plain_loss_and_gradients_of_an_accumulated_step(normalization, monkeypatch):
    calls = []
    monkeypatch.setattr(loop, "chunked_summed_loss", lambda *a, **k: calls.append(1) or chunked_summed_loss(*a, **k))
    examples = random_examples(12, seed=3)  # unequal lengths, half with a masked prompt
    plain_loss, plain, _ = _step(examples, False, normalization)
    assert calls == []
    chunked_loss, chunked, model = _step(examples, True, normalization)
    assert len(calls) == 3  # the chunked path ran, once per micro-batch
    assert abs(plain_loss.item() - chunked_loss.item()) <= 1e-5 * plain_loss.item()
    for name in plain:
        assert torch.allclose(plain[name], chunked[name], atol=1e-5, rtol=1e-5), name
    assert max(g.abs().max().item() for g in plain.values()) > 1e-3  # gradients are not all ~0
    assert isinstance(model.get_output_embeddings(), torch.nn.Linear)  # the head is back


def test_chunked_loss_under_bf16_autocast_stays_close_to_the_plain_one():
    examples = random_examples(8, seed=4)
    plain_loss, plain, _ = _step(examples, False, "tokens", autocast="bf16")
    chunked_loss, chunked, _ = _step(examples, True, "tokens", autocast="bf16")
    assert abs(plain_loss.item() - chunked_loss.item()) <= 1e-2 * plain_loss.item()
    for name in plain:
        assert torch.allclose(plain[name], chunked[name], atol=1e-3, rtol=5e-2), name


def test_chunked_loss_in_small_chunks_with_a_trainable_head_and_bias():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 9, 16, generator=generator, requires_grad=True)
    head = torch.nn.Linear(16, 50)
    labels = torch.randint(0, 50, (3, 9), generator=generator)
    labels[0, :4] = IGNORE_INDEX
    labels[2, 6:] = IGNORE_INDEX  # padding
    plain = summed_loss(head(hidden), labels)
    expected = torch.autograd.grad(plain, [hidden, head.weight, head.bias])
    chunked = chunked_summed_loss(hidden, head, labels, chunk_rows=5)  # 16 label rows: 4 chunks
    got = torch.autograd.grad(chunked * 1.0, [hidden, head.weight, head.bias])
    assert torch.allclose(plain, chunked, atol=1e-5)
    for e, g in zip(expected, got, strict=True):
        assert torch.allclose(e, g, atol=1e-5), (e - g).abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_a_target_whose_probability_underflows_gets_its_exact_loss(dtype):
    # logits 0 and 200 * x: a target at 0 has probability exp(-200), 0 in fp32; its row's loss
    # is computed again from the logits (about 200), the other rows' from their probabilities
    head = torch.nn.Linear(2, 3, bias=False).to(dtype)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.0, 0.0], [200.0, 0.0], [0.0, 1.0]]))
    hidden = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 0.0]]], dtype=dtype)
    labels = torch.tensor([[0, 0, 1, 2]])  # targets after the shift: 0 (underflows), 1, 2
    chunked = chunked_summed_loss(hidden, head, labels, chunk_rows=2)
    plain = summed_loss(head(hidden), labels)
    assert 200 < chunked.item() < 210
    assert torch.allclose(chunked.float(), plain.float(), rtol=1e-6), (chunked, plain)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_chunk_buffers_held_for_a_run_give_the_losses_of_fresh_ones_and_are_made_once(dtype, monkeypatch):
    generator = torch.Generator().manual_seed(1)
    head = torch.nn.Linear(16, 50).to(dtype)
    calls = [(torch.randn(2, 9, 16, generator=generator, dtype=dtype), torch.randint(0, 50, (2, 9), generator=generator))
             for _ in range(3)]
    calls[0][1][:, :8] = IGNORE_INDEX  # 2 label rows (after the shift): a chunk buffer of 2 rows
    calls[2][1][0, :6] = IGNORE_INDEX  # fewer label rows than the second call's
    fresh = [chunked_summed_loss(h, head, y, chunk_rows=5) for h, y in calls]
    made = []
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: made.append(a) or real_empty(*a, **k))
    with loss_mod.held_chunk_buffers():
        held = [chunked_summed_loss(h, head, y, chunk_rows=5) for h, y in calls]
        # a buffer of 2 rows (and, in bf16, its copy), one of 5 for the second call, held for the third
        copies = 1 if dtype is torch.float32 else 2  # bf16: the logits and their fp32 copy
        assert sorted(made) == [((2, 50),)] * copies + [((5, 50),)] * copies
    assert loss_mod._HELD is None  # nothing held after the run
    for a, b in zip(fresh, held, strict=True):
        assert torch.equal(a, b)


def test_the_head_is_not_bypassed_when_it_is_trainable_or_hooked():
    model = tiny_trainable()
    head = model.get_output_embeddings()
    with hf_compat.bypassed_output_head(model) as found:
        assert found is head and isinstance(model.get_output_embeddings(), torch.nn.Identity)
    assert model.get_output_embeddings() is head
    head.weight.requires_grad_(True)
    with hf_compat.bypassed_output_head(model) as found:
        assert found is None and model.get_output_embeddings() is head
    head.weight.requires_grad_(False)
    handle = head.register_forward_hook(lambda *_: None)
    with hf_compat.bypassed_output_head(model) as found:
        assert found is None
    handle.remove()


@pytest.mark.parametrize(("flags", "expected"), [
    ({"avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16"), ({"avx2", "avx512f"}, "no"), (set(), "no"),
])
def test_auto_precision_on_the_cpu_is_bf16_only_with_native_bf16(monkeypatch, flags, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision_mod, "cpu_flags", lambda: frozenset(flags))
    assert mixed_precision("auto") == expected
    assert mixed_precision("fp32") == "no"
    assert mixed_precision("bf16") == "bf16"  # asked for explicitly: honoured everywhere


def test_cpu_flags_read_from_cpuinfo(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu avx2 avx512_bf16\n\nprocessor : 1\nflags : fpu avx2 avx512_bf16\n")
    assert precision_mod.cpu_flags(info) == frozenset({"fpu", "avx2", "avx512_bf16"})
    assert precision_mod.cpu_flags(tmp_path / "absent") == frozenset()


def test_bf16_on_the_cpu_holds_frozen_linear_weights_in_bf16_and_restores_the_fp32_originals():
    model = tiny_trainable()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    q = model.model.layers[0].self_attn.q_proj.weight  # trainable
    up = model.model.layers[0].mlp.up_proj.weight  # frozen
    with Precision("bf16", torch.device("cpu")).frozen_weights_cast(model) as frozen:
        cast = frozen.count
        assert cast == len([m for m in model.modules() if isinstance(m, torch.nn.Linear)]) - 4
        assert up.dtype == torch.bfloat16 and q.dtype == torch.float32
        assert model.get_input_embeddings().weight.dtype == torch.float32
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, before[name]), name
    with Precision("no", torch.device("cpu")).frozen_weights_cast(model) as frozen:
        assert frozen.count == 0 and up.dtype == torch.float32


def test_parked_tensors_come_back_bit_for_bit_and_the_callers_list_is_emptied():
    tensors = [torch.randn(7, 5), torch.randn(3)]
    expected = [t.clone() for t in tensors]
    with precision_mod.parked(tensors) as originals:
        assert tensors == []  # the caller's references are gone: the memory can be freed
        back = originals()
    assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(back, expected, strict=True))


def test_parked_tensors_stay_in_memory_when_no_file_can_be_written(monkeypatch):
    import tempfile

    def full(**_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", full)
    tensors = [torch.randn(4)]
    expected = tensors[0].clone()
    with precision_mod.parked(tensors) as originals:
        assert torch.equal(originals()[0], expected)


def test_a_bf16_run_holds_the_frozen_weights_in_bf16_for_every_step_then_restores_them(tmp_path):
    from lladapt.config import TrainSection
    from lladapt.training import train

    model = tiny_trainable()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    seen = []
    up = model.model.layers[0].mlp.up_proj
    up.register_forward_hook(lambda m, a, out: seen.append(m.weight.dtype))
    saved = []

    def save(path):  # a checkpoint's save callback sees the fp32 model, and can run it as such
        saved.append(up.weight.dtype)
        model(input_ids=torch.tensor([[1, 2, 3]]))
        path.mkdir(parents=True, exist_ok=True)

    settings = TrainSection(max_steps=3, batch_size=4, micro_batch_size=2, precision="bf16",
                            progress="none", save_steps=1, warmup_steps=0)
    train(model, random_examples(8, seed=1), settings, learning_rate=1e-3, pad_token_id=0, echo=lambda _: None,
          save=save, checkpoint_dir=tmp_path / "checkpoints")
    assert saved == [torch.float32] * 2  # checkpoints after steps 1 and 2 (the last step's is the run's output)
    seen = [dtype for dtype in seen if dtype == torch.bfloat16]  # the callbacks' forwards ran in fp32
    assert len(seen) == 6  # 3 steps x 2 micro-batches, each in bf16
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.dtype == torch.float32 and torch.equal(p, before[name]), name


def test_a_frozen_tensor_is_cast_once_and_again_when_it_changes():
    precision = Precision("bf16", torch.device("cpu"))
    frozen = torch.randn(8, 4)
    first = precision.frozen_cast(frozen, torch.bfloat16)
    assert first.dtype == torch.bfloat16 and precision.frozen_cast(frozen, torch.bfloat16) is first
    frozen.add_(1)  # changed in place: cast again
    again = precision.frozen_cast(frozen, torch.bfloat16)
    assert again is not first and torch.equal(again, frozen.to(torch.bfloat16))
    trainable = torch.randn(3, requires_grad=True)
    assert precision.frozen_cast(trainable, torch.bfloat16) is not precision.frozen_cast(trainable, torch.bfloat16)


@pytest.mark.parametrize("tied", [True, False])
def test_a_cpu_bf16_run_casts_the_frozen_output_head_once(tied, monkeypatch):
    casts = []
    original = Precision.frozen_cast

    def spy(self, tensor, dtype):
        out = original(self, tensor, dtype)
        casts.append((tensor, out, out.dtype))
        return out

    monkeypatch.setattr(Precision, "frozen_cast", spy)
    model = tiny_trainable()
    if tied:  # as SmolLM2's: the head stays fp32 for the embedding, and its bf16 cast is held
        model.lm_head.weight = model.model.embed_tokens.weight
    two_steps(model)
    head = model.get_output_embeddings().weight
    assert len(casts) == 2 * 2 and all(tensor is head for tensor, _, _ in casts)  # once per micro-batch
    assert len({id(out) for _, out, _ in casts}) == 1 and {dtype for *_, dtype in casts} == {torch.bfloat16}
    assert (casts[0][1] is head) is not tied  # untied, the head is itself in bf16 for the run
