"""Sharded training (``train.distributed: fsdp``, FSDP2): two CPU processes (gloo) shard the
frozen base of a tiny llama and train each adapter kind (and LoRA with activation checkpointing)
to what one process trains, under this machine's default precision (bf16 autocast where the CPU
has native bf16)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lladapt.config import TrainSection
from lladapt.training import packed_linear, train
from tests.adapters_support import tiny_adapted
from tests.test_multiprocess import SETTINGS, launch
from tests.training_support import random_examples

ADAPTERS = {
    "lora": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
    "series": {"name": "series", "bottleneck_size": 8},
    "parallel": {"name": "parallel", "bottleneck_size": 8},
    "prefix": {"name": "prefix", "num_virtual_tokens": 4},
    "prompt": {"name": "prompt", "num_virtual_tokens": 4},
}

# the child trains under FSDP and reports, just before the base is gathered whole again at the
# end, whether it was sharded and what share of the base's numbers this process held
CHILD = textwrap.dedent("""
    import json, sys
    import torch
    sys.path.insert(0, sys.argv[3])
    from safetensors.torch import save_file
    from lladapt.config import TrainSection
    from lladapt.training import loop, train
    from tests.adapters_support import tiny_adapted
    from tests.test_fsdp import ADAPTERS
    from tests.test_multiprocess import SETTINGS
    from tests.training_support import random_examples

    seen = {}
    unshard = loop.unshard_for_inference
    def inspect(model):
        from torch.distributed.tensor import DTensor
        base = [p for p in model.base_model.parameters() if not p.requires_grad]
        seen["sharded"] = all(isinstance(p, DTensor) for p in base)
        seen["held"] = sum(p.to_local().numel() for p in base) / sum(p.numel() for p in base)
        unshard(model)
    loop.unshard_for_inference = inspect

    torch.manual_seed(0)  # the adapter's initial weights
    model = tiny_adapted("llama", ADAPTERS[sys.argv[1]])
    extra = json.loads(sys.argv[4])
    result = train(model, random_examples(30), TrainSection(**{**SETTINGS, "epochs": 1}, **extra, distributed="fsdp"),
                   learning_rate=0.01, pad_token_id=0, echo=lambda _: None)
    from accelerate import PartialState
    if PartialState().is_main_process:
        save_file({k: v.contiguous() for k, v in model.adapter_state_dict().items()}, sys.argv[2])
        print("RESULT", json.dumps({"steps": result.steps, **seen}))
""")


@pytest.mark.slow
@pytest.mark.parametrize(("adapter", "extra"), [
    *[pytest.param(name, {}, id=name) for name in sorted(ADAPTERS)],
    pytest.param("lora", {"gradient_checkpointing": True}, id="lora-activation-checkpointing"),
])
def test_fsdp_two_processes_train_the_same_adapter_as_one(adapter, extra, tmp_path, monkeypatch):
    # a sharded base runs on plain weights (no packing), so the one-process run here does too: its
    # packed q/k/v would round their summed input gradient to bf16 once, where plain layers round
    # three (the same to within bf16 rounding: tests/test_packed_linear.py)
    monkeypatch.setattr(packed_linear, "available", lambda: False)
    torch.manual_seed(0)  # the adapter's initial weights, as in the child
    model = tiny_adapted("llama", ADAPTERS[adapter])
    # one epoch of 15 micro-batches: 3 steps of 4, then one of 3 (2 on one process, 1 and a pass of
    # weight zero on the other, as every pass gathers the sharded weights from both)
    single = train(model, random_examples(30), TrainSection(**{**SETTINGS, "epochs": 1}, **extra), learning_rate=0.01,
                   pad_token_id=0, echo=lambda _: None)
    one = {k: v.contiguous() for k, v in model.adapter_state_dict().items()}
    save_file(one, tmp_path / "one.safetensors")

    script = tmp_path / "child.py"
    script.write_text(CHILD)
    done = launch(str(script), adapter, str(tmp_path / "two.safetensors"), str(Path(__file__).parents[1]),
                  json.dumps(extra), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.split("RESULT", 1)[1])
    assert report["steps"] == single.steps == 4
    assert report["sharded"] and report["held"] == pytest.approx(0.5, abs=0.01)
    two = load_file(tmp_path / "two.safetensors")
    assert one.keys() == two.keys()
    assert max((one[k] - two[k]).abs().max().item() for k in one) <= 1e-5
    torch.manual_seed(0)
    start = tiny_adapted("llama", ADAPTERS[adapter]).adapter_state_dict()
    assert max((one[k] - start[k]).abs().max().item() for k in one) > 1e-3  # it trained
