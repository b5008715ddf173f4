"""One lever measured inside one training run, step by step: every optimizer step's micro-batches
run forward and backward twice, once with the lever off and once on (the order alternating from
step to step), on the same batches at the same minute; the step then goes on with the second
pass's gradients. Reported: the median of the per-step ratios off / on, with their range.

Why: on this 2-core machine two whole runs of the same code differ by up to 15% from one minute to
the next (`train_speed.py`'s alternating repeats), so a lever worth 2-6% needs many whole runs to
resolve; paired passes see the same load and the same batches.

Levers (``--lever``), each switched between the code before it and the code on main:

* ``loss-softmax``: the chunked loss's softmax by torch's kernel in place (main) against the five
  in-place operations before it (max, subtract, exp, sum, divide);
* ``rotary``: the rotary embedding in one pass each way (main) against transformers' function;
* ``attention-bf16``: a bf16 run's causal attention in bf16 matmuls with an fp32 softmax (main)
  against the chunked SDPA in fp32 before it.

    .venv/bin/python benchmarks/paired_lever.py --lever loss-softmax --steps 9 --skip 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _softmax_before(logits, targets):
    """The chunked loss's softmax before the lever: five in-place passes over the chunk."""
    logits.sub_(logits.amax(dim=-1, keepdim=True))
    probs = logits.div_(logits.exp_().sum(dim=-1, keepdim=True))
    return probs, probs.gather(1, targets[:, None]).squeeze(1)


def _switch(lever: str):
    """``switch(on)`` for ``lever``: the code on main where ``on``, the code before it else."""
    if lever == "loss-softmax":
        from lladapt.training import loss

        after = loss._softmax_in_place

        def switch(on: bool) -> None:
            loss._softmax_in_place = after if on else _softmax_before
    elif lever == "rotary":
        from transformers.models.llama import modeling_llama

        from lladapt.training import rotary

        def switch(on: bool) -> None:
            current = getattr(modeling_llama, rotary.NAME)
            original = getattr(current, "original", None)
            if not on and original is not None:  # installed by the run: keep it for the next "on"
                switch.replacement = current
                setattr(modeling_llama, rotary.NAME, original)
            elif on and original is None:
                setattr(modeling_llama, rotary.NAME, switch.replacement)
    elif lever == "attention-bf16":
        from transformers import AttentionInterface

        from lladapt.training import attention

        def switch(on: bool) -> None:
            AttentionInterface.register(attention.BF16, attention.attention_in_bf16 if on else attention.sdpa_chunked_in_fp32)
    else:
        raise SystemExit(f"unknown lever {lever!r}")
    return switch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lever", required=True, choices=["loss-softmax", "rotary", "attention-bf16"])
    parser.add_argument("--steps", type=int, default=9, help="optimizer steps run")
    parser.add_argument("--skip", type=int, default=3, help="first steps left out (the heap's growth)")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import setups
    from provenance import commit
    from train_speed import lladapt_workload, train_steps

    from lladapt.training import loop

    setups.set_threads(args.threads)
    model, loaded, encoded = lladapt_workload()
    switch = _switch(args.lever)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    backward_step = loop.backward_step

    def paired(model, *a, **k):
        order = (False, True) if len(seconds[True]) % 2 == 0 else (True, False)
        for on in order:
            switch(on)
            for p in model.parameters():
                p.grad = None
            start = time.perf_counter()
            out = backward_step(model, *a, **k)
            seconds[on].append(time.perf_counter() - start)
        switch(True)
        return out

    loop.backward_step = paired
    train_steps(model, loaded, encoded, args.steps, args.precision)
    off, on = seconds[False][args.skip:], seconds[True][args.skip:]
    ratios = [a / b for a, b in zip(off, on, strict=True)]
    result = {"lever": args.lever, "precision": args.precision, "steps": args.steps, "skip": args.skip,
              "commit": commit(), "off_seconds": off, "on_seconds": on, "ratios_off_over_on": ratios,
              "median_ratio": statistics.median(ratios)}
    print(f"{args.lever} ({args.precision}): forward + backward of a step {statistics.median(off):.2f} s off, "
          f"{statistics.median(on):.2f} s on; off / on paired by step: median {result['median_ratio']:.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f}, {len(ratios)} steps)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
