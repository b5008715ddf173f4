"""``train.compile``: the compiled model trains as the eager one does (same losses and adapter
weights within fp32 tolerance), its compile time is reported apart, the adapters' hooks trace
without graph breaks, the decoder layers are compiled one region each with one trace shared by
all of them, and ``auto`` compiles on a CUDA GPU only, not a quantized or sharded base."""

from __future__ import annotations

import pytest
import torch

from lladapt.config import TrainSection
from lladapt.testing import tiny_model
from lladapt.training import train
from lladapt.training.compiling import compile_regions, repeated_blocks, wants_compile
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


def test_a_cpu_bf16_run_compiles_on_the_weights_and_attention_its_steps_run(monkeypatch):
    """Under CPU bf16 the frozen weights turn bf16 and the attention fp32 for the run; compiled
    before that, every region was traced again at the first step (a dtype guard failed)."""
    from torch._dynamo.utils import counters

    from lladapt.training import loop
    from lladapt.training import precision as precision_mod

    monkeypatch.setattr(precision_mod, "cpu_flags", lambda: frozenset({"avx512_bf16"}))  # fp32 attention
    after_compile = []
    original = loop._compile
    monkeypatch.setattr(loop, "_compile", lambda run: (original(run), after_compile.append(
        counters["stats"]["unique_graphs"]))[0])
    torch._dynamo.reset()
    counters.clear()
    model = tiny_adapted("llama", {"name": "lora", "r": 4, "dropout": 0.0},
                         {"name": "modules", "modules": ["q", "v", "up", "down"]})
    settings = TrainSection(max_steps=2, batch_size=4, micro_batch_size=2, precision="bf16",
                            progress="none", save_steps=0, warmup_steps=0, compile=True)
    result = train(model, random_examples(8, seed=2), settings, learning_rate=1e-2, pad_token_id=0,
                   echo=lambda _: None)
    assert result.compile_seconds > 0.0 and after_compile[0] >= 1
    assert counters["stats"]["unique_graphs"] == after_compile[0], dict(counters["recompiles"])
    torch._dynamo.reset()


def test_auto_compiles_on_a_cuda_gpu_only_and_not_a_quantized_or_sharded_base():
    gpu = torch.device("cuda", 0)
    plain = tiny_adapted("llama", {"name": "lora", "r": 4})
    assert wants_compile("auto", gpu, plain)
    assert not wants_compile("auto", torch.device("cpu"), plain)
    assert not wants_compile("auto", gpu, plain, sharded=True)
    plain.base_model.hf_quantizer = object()  # what transformers attaches to a quantized load
    assert not wants_compile("auto", gpu, plain)
    assert wants_compile(True, gpu, plain, sharded=True)  # asked for: compiled
    assert wants_compile(True, torch.device("cpu")) and not wants_compile(False, gpu)


def test_each_decoder_layer_is_compiled_and_all_share_one_trace():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = tiny_model("llama", num_hidden_layers=4)
    layers = list(model.model.layers)
    assert repeated_blocks(model) == layers
    assert compile_regions(model) == 4
    assert all(layer._compiled_call_impl is not None for layer in layers)
    assert model._compiled_call_impl is None and model.lm_head._compiled_call_impl is None
    eager = tiny_model("llama", num_hidden_layers=4)
    ids = torch.randint(0, 100, (2, 9))
    compiled_logits = model(ids, use_cache=False).logits
    compiled_logits.sum().backward()
    assert torch.allclose(compiled_logits, eager(ids, use_cache=False).logits, atol=1e-5)
    # one trace for the four layers (the embedding trains here, so every layer's input needs a
    # gradient; under an adapter the first layer's does not, and it gets a second trace)
    assert counters["frames"]["ok"] == 1, dict(counters["frames"])
    torch._dynamo.reset()


def test_only_the_outermost_list_of_one_class_makes_regions():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])

    blocks = torch.nn.ModuleList([Block(), Block()])
    model = torch.nn.ModuleDict({"mixed": torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.ReLU()]),
                                 "one": torch.nn.ModuleList([torch.nn.Linear(2, 2)]), "blocks": blocks})
    assert repeated_blocks(model) == list(blocks)


def test_a_model_without_repeated_blocks_is_compiled_whole():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU())
    assert repeated_blocks(model) == [] and compile_regions(model) == 1
    assert model._compiled_call_impl is not None


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


@pytest.mark.parametrize("family", ["llama", "bloom", "opt", "gptj"])
@pytest.mark.parametrize("adapter", ["lora", "series", "parallel", "prefix", "prompt"])
def test_the_regions_of_every_backbone_are_its_decoder_layers_whatever_the_adapter(family, adapter):
    model = tiny_adapted(family, {"name": adapter})
    blocks = repeated_blocks(model)
    layers = model.base_model.get_submodule(model.layout.layers)  # what the backbone plugin declares
    assert blocks == list(layers) and len(blocks) == model.layout.num_layers == model.base_model.config.num_hidden_layers
