"""Where lladapt's training time and memory go: ``torch.profiler`` over the first optimizer steps
of the train_speed workload (SmolLM2-135M, LoRA r=32 on q, k, v, up, down, 4 x 4 micro-batches),
run through ``lladapt.training.train``, so the loop around the model is profiled too.

    .venv/bin/python benchmarks/profile_train.py --steps 1 --precision fp32
    .venv/bin/python benchmarks/profile_train.py --steps 1 --precision bf16 --no-chunked-loss
    .venv/bin/python benchmarks/profile_train.py --steps 1 --precision bf16 --shapes --rows 40
    .venv/bin/python benchmarks/profile_train.py --steps 2 --precision bf16 --after-first

Prints the operators by self CPU time and by allocated memory.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--adapter", default="lora")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-chunked-loss", action="store_true")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--after-first", action="store_true",
                        help="profile the --steps steps after the first (whose page faults, memory the "
                             "process touches for the first time, inflate every operator); --skip 1")
    parser.add_argument("--skip", type=int, default=0,
                        help="profile the --steps steps after this many (the heap grows to a step's "
                             "working set over the first few steps, faulting in the pages it takes)")
    parser.add_argument("--shapes", action="store_true",
                        help="one row per operator and input shapes (which matmul, which copy), no memory table")
    args = parser.parse_args()

    import setups
    from torch.profiler import ProfilerActivity, profile, schedule
    from train_speed import lladapt_workload, train_steps

    from lladapt.training import loop

    setups.set_threads(args.threads)
    model, loaded, encoded = lladapt_workload(args.adapter)
    if args.no_chunked_loss:
        original = loop.backward_step
        loop.backward_step = lambda *a, **k: original(*a, **{**k, "chunked_loss": False})
    skip = max(args.skip, 1 if args.after_first else 0)
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=not args.shapes, record_shapes=args.shapes,
                 schedule=schedule(wait=skip, warmup=0, active=args.steps)) as prof:
        optimizer_step = loop._optimizer_step
        loop._optimizer_step = lambda *a, **k: (optimizer_step(*a, **k), prof.step())[0]
        result = train_steps(model, loaded, encoded, args.steps + skip, args.precision)
    total = time.perf_counter() - started
    print(f"{result.steps} steps ({args.steps} profiled), {result.real_tokens} non-pad tokens, {total:.1f} s under the profiler, "
          f"padded share {result.padded_share:.1%}")
    table = prof.key_averages(group_by_input_shape=args.shapes)
    print(table.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    if not args.shapes:
        print(table.table(sort_by="self_cpu_memory_usage", row_limit=12))


if __name__ == "__main__":
    main()
