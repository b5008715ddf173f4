"""``train.compile``: the model through ``torch.compile`` (inductor, on the CPU and the GPU), with
the compilation done by one warm-up pass before the clock starts, so that the run's throughput
and its reported compile time are separate.

``auto`` compiles on a CUDA GPU only. On the CPU it did not pay on the issue-20 workload
(SmolLM2-135M, LoRA r=32, 192 examples, 2 cores): compiling took 325 s for a 10% faster step,
paid back only after about 55 minutes of training (docs/benchmarks.md, "Training levers").
``dynamic=True``: micro-batches differ in length, and a shape-specialised graph would recompile
for each. The adapters' module hooks trace without graph breaks (a test counts them); the fused
adapter branches step aside under compilation (:func:`lladapt.plugins.adapters.fused.enabled`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch


def wants_compile(setting: bool | str, device: torch.device) -> bool:
    """``train.compile`` for this device: ``auto`` means yes on a CUDA GPU, no on the CPU."""
    if setting == "auto":
        return device.type == "cuda"
    return bool(setting)


def compile_and_warm_up(model: torch.nn.Module, params: Sequence[torch.nn.Parameter],
                        one_pass: Callable[[], Any]) -> float:
    """Compile ``model`` in place and run ``one_pass`` (a forward and backward of one
    micro-batch) so that the compilation happens now; the random generators are put back and the
    gradients dropped afterwards, so the run trains as if the pass had not happened. Returns the
    seconds it took."""
    import torch

    started = time.perf_counter()
    model.compile(dynamic=True)
    cpu_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        one_pass()
    finally:
        torch.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        for p in params:
            p.grad = None
    return time.perf_counter() - started
