"""Where a training step's time goes, without a profiler: ``perf_counter`` around the forward and
backward of lladapt's own autograd functions (the fused LoRA branches, the packed frozen Linear
layers, the rotary embedding, a bf16 run's attention) and around the chunked loss, summed per
optimizer step, on the train_speed workload (SmolLM2-135M, LoRA r=32 on q, k, v, up, down, 4 x 4
micro-batches). The chunked SDPA and LLaMA's RMSNorm are timed forward around the call and
backward between two identity functions around them (the autograd engine runs one node at a time
on the CPU, so the time from the one after the region to the one before it is the region's
backward), and the optimizer's step around it. The rest of the step (the MLP's activation, casts,
residual adds, Python) is the step less those.

``torch.profiler`` timed the small operators of a step several times slower than they run (the
up projection's LoRA product: 4.4-4.8 ms a call under it, 0.47 ms timed this way); these timings
add only a clock read around each call.

    .venv/bin/python benchmarks/time_regions.py --steps 4 --skip 4 --precision bf16
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: seconds per region in the current step.
SPENT: collections.Counter[str] = collections.Counter()


def _timed(name: str, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - start
    return wrapper


def _time_function(name: str, function: type) -> None:
    """Time an autograd Function's forward and backward (its staticmethods, wrapped in place)."""
    for phase in ("forward", "backward"):
        setattr(function, phase, staticmethod(_timed(f"{name} {phase}", getattr(function, phase))))


def _stamp(name: str, opening: bool):
    """An identity autograd function that notes, in backward, when the backward of ``name``
    began (the stamp after the region) or adds its time (the stamp before it)."""
    import torch

    class Stamp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            if opening:
                OPENED[name] = time.perf_counter()
            elif name in OPENED:
                SPENT[f"{name} backward"] += time.perf_counter() - OPENED.pop(name)
            return grad

    return Stamp.apply


#: when the backward of a region began, by name.
OPENED: dict[str, float] = {}


def _timed_region(name: str, fn, tensor_at: int):
    """``fn`` timed forward, and backward between stamps on its ``tensor_at`` argument and its
    (first) output."""
    before, after = _stamp(name, opening=False), _stamp(name, opening=True)
    forward = _timed(f"{name} forward", fn)

    def wrapper(*args, **kwargs):
        args = list(args)
        if args[tensor_at].requires_grad:
            args[tensor_at] = before(args[tensor_at])
        out = forward(*args, **kwargs)
        first = out[0] if isinstance(out, tuple) else out
        if first.requires_grad:
            first = after(first)
        return (first, *out[1:]) if isinstance(out, tuple) else first
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="steps timed")
    parser.add_argument("--skip", type=int, default=4, help="steps run first, untimed (the heap's growth)")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import setups
    from train_speed import lladapt_workload, train_steps
    from transformers.models.llama import modeling_llama

    from lladapt.plugins.adapters import fused
    from lladapt.training import attention, attention_bf16, loop, packed_linear, precision, rotary

    setups.set_threads(args.threads)
    model, loaded, encoded = lladapt_workload()
    _time_function("LoRA branches", fused._LowRank)
    _time_function("packed frozen Linear", packed_linear._function())
    _time_function("rotary embedding", rotary._function())
    loop.chunked_summed_loss = _timed("chunked loss (head + cross-entropy, both passes)", loop.chunked_summed_loss)
    # the chunked SDPA call (fp32 runs; a bf16 run's calls that are not plainly causal), and a bf16
    # run's causal attention in bf16 matmuls (an autograd function)
    attention.sdpa_chunked = _timed_region("attention kernel", attention.sdpa_chunked, tensor_at=1)
    _time_function("attention kernel", attention_bf16._Attention)
    norm = modeling_llama.LlamaRMSNorm
    norm.forward = _timed_region("RMSNorm", norm.forward, tensor_at=1)
    precision.Precision.step = _timed("optimizer step", precision.Precision.step)

    steps: list[tuple[float, dict[str, float]]] = []
    optimizer_step = loop._optimizer_step

    def step(*a, **k):
        SPENT.clear()
        start = time.perf_counter()
        out = optimizer_step(*a, **k)
        steps.append((time.perf_counter() - start, dict(SPENT)))
        return out

    loop._optimizer_step = step
    train_steps(model, loaded, encoded, args.steps + args.skip, args.precision)
    timed = steps[args.skip:]
    total = sum(seconds for seconds, _ in timed)
    regions = collections.Counter()
    for _, spent in timed:
        regions.update(spent)
    print(f"{len(timed)} steps timed after {args.skip}, {args.precision}: {total / len(timed):.2f} s a step")
    for name, seconds in regions.most_common():
        print(f"  {name:<50} {seconds / len(timed):6.2f} s a step  {seconds / total:6.1%}")
    rest = total - sum(regions.values())
    print(f"  {'the rest (activation, casts, residual adds, Python)':<50} {rest / len(timed):6.2f} s a step  {rest / total:6.1%}")


if __name__ == "__main__":
    main()
