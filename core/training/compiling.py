"""``train.compile``: the model through ``torch.compile`` (inductor, on the CPU and the GPU), one
region at a time, with the compilation done by one warm-up pass before the clock starts, so that
the run's throughput and its reported compile time are separate.

**Regions.** Each block of the model's repeated blocks (the decoder layers: a ``ModuleList`` of
one class) is compiled on its own, in place, as PyTorch's regional compilation recipe and
accelerate's ``compile_regions`` do: dynamo traces the block's code once and the other layers
reuse that trace (parameters are graph inputs; under an adapter the first layer, whose input needs
no gradient, gets a second one), so compiling 30 layers costs about one layer's compile. The
embedding, the final norm and the head stay eager (the loss runs the head itself, chunk by
chunk). A model without repeated blocks is compiled whole.

``auto`` compiles on a CUDA GPU only, and not a quantized or sharded base there (bitsandbytes'
layers and FSDP's hooks are where compilation is least proven; ask with ``true``). On the CPU it
did not pay on the issue-20 workload (docs/benchmarks.md, "Training levers"). ``dynamic=True``:
micro-batches differ in length, and a shape-specialised graph would recompile for each. The
adapters' module hooks trace without graph breaks (a test counts them); the fused adapter
branches step aside under compilation (:func:`lladapt.plugins.adapters.fused.enabled`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch


def wants_compile(setting: bool | str, device: torch.device, model: torch.nn.Module | None = None,
                  sharded: bool = False) -> bool:
    """``train.compile`` for this run: ``auto`` means yes on a CUDA GPU, unless the base is
    quantized (loaded with a transformers quantizer) or sharded; no on the CPU."""
    if setting == "auto":
        base = getattr(model, "base_model", model)  # an adapted model holds the loaded one
        quantized = getattr(base, "hf_quantizer", None) is not None
        return device.type == "cuda" and not quantized and not sharded
    return bool(setting)


def repeated_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks of every ``ModuleList`` in ``model`` holding two or more modules of one class
    (a transformer's layers), outermost lists first; a list inside such a block is not searched."""
    import torch

    found: list[torch.nn.Module] = []
    inside: set[int] = set()
    for module in model.modules():
        if id(module) in inside:
            continue
        if isinstance(module, torch.nn.ModuleList) and len(module) > 1 and len({type(m) for m in module}) == 1:
            found.extend(module)
            inside.update(id(m) for block in module for m in block.modules())
    return found


def compile_regions(model: torch.nn.Module) -> int:
    """Compile each repeated block of ``model`` in place (``nn.Module.compile``: the module and
    its state dict keep their names), or the whole model when it has none. Returns the number of
    modules compiled."""
    blocks = repeated_blocks(model) or [model]
    for block in blocks:
        block.compile(dynamic=True)
    return len(blocks)


def compile_and_warm_up(model: torch.nn.Module, params: Sequence[torch.nn.Parameter],
                        one_pass: Callable[[], Any]) -> float:
    """Compile ``model``'s regions in place and run ``one_pass`` (a forward and backward of one
    micro-batch) so that the compilation happens now; the random generators are put back and the
    gradients dropped afterwards, so the run trains as if the pass had not happened. Returns the
    seconds it took."""
    import torch

    started = time.perf_counter()
    compile_regions(model)
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
