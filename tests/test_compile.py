"""``train.compile``: the compiled model trains as the eager one does (same losses and adapter
weights within fp32 tolerance), its compile time is reported apart, the adapters' hooks trace
without graph breaks, and ``auto`` compiles on a CUDA GPU only."""

from __future__ import annotations

import torch

from lladapt.config import TrainSection
from lladapt.training import train
from lladapt.training.compiling import wants_compile
from tests.adapters_support import randomise, tiny_adapted
from tests.training_support import random_examples


def _trained(compile_setting):
    model = tiny_adapted("llama", {"name": "lora", "r": 4, "dropout": 0.0},
                         {"name": "modules", "modules": ["q", "v", "up", "down"]})
    randomise(model)
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    settings = TrainSection(max_steps=2, batch_size=4, micro_batch_size=2, precision="fp32",
                            progress="none", save_steps=0, warmup_steps=0, logging_steps=1,
                            compile=compile_setting)
    result = train(model, random_examples(8, seed=2), settings, learning_rate=1e-2, pad_token_id=0,
                   echo=lambda _: None)
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert max((weights[n] - w).abs().max().item() for n, w in start.items()) > 1e-4  # it trained
    return result, weights


def test_a_compiled_run_trains_as_the_eager_one_without_graph_breaks():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager, eager_weights = _trained(False)
    compiled, compiled_weights = _trained(True)
    assert eager.compile_seconds == 0.0 and compiled.compile_seconds > 0.0
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo did compile the model
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert len(compiled.losses) == len(eager.losses) == 2
    for (_, a), (_, b) in zip(eager.losses, compiled.losses, strict=True):
        assert abs(a - b) <= 1e-4 * abs(a)
    for name, weight in eager_weights.items():
        assert torch.allclose(weight, compiled_weights[name], atol=1e-4, rtol=1e-4), name
    torch._dynamo.reset()


def test_auto_compiles_on_a_cuda_gpu_only():
    assert wants_compile("auto", torch.device("cuda", 0))
    assert not wants_compile("auto", torch.device("cpu"))
    assert wants_compile(True, torch.device("cpu")) and not wants_compile(False, torch.device("cuda"))


def test_the_warm_up_pass_leaves_no_gradient_and_no_trace_in_the_random_generator():
    from lladapt.training.compiling import compile_and_warm_up

    layer = torch.nn.Linear(3, 2)
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    seconds = compile_and_warm_up(layer, list(layer.parameters()),
                                  lambda: (layer(torch.rand(5, 3)).sum() + torch.rand(1)).sum().backward())
    assert seconds >= 0.0
    assert layer.weight.grad is None and layer.bias.grad is None
    assert torch.equal(torch.rand(4), expected)
