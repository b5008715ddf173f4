"""The machine's matmul peak (GFLOP/s) at a fixed thread count, fp32 and bf16: the denominator of
model FLOPs utilisation (docs/benchmarks.md). Square products of 2048 and the shapes SmolLM2's
training runs (600 token rows x 576 -> 1536, x 576 -> 49,152); the best of ``--repeats`` timings.

    .venv/bin/python benchmarks/matmul_peak.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

SHAPES = ((2048, 2048, 2048), (600, 576, 1536), (600, 1536, 576), (600, 576, 49152))


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``fn``, after one untimed warm-up call (oneDNN
    picks its kernel, caches fill)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def peak(dtype_name: str, repeats: int) -> dict[str, float]:
    import torch

    dtype = getattr(torch, dtype_name)
    out = {}
    for m, k, n in SHAPES:
        a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
        best = best_seconds(lambda a=a, b=b: torch.mm(a, b), repeats)
        out[f"{m}x{k}x{n}"] = round(2 * m * k * n / best / 1e9, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    result = {d: peak(d, args.repeats) for d in ("float32", "bfloat16")}
    result = {d: {**shapes, "peak": max(shapes.values())} for d, shapes in result.items()}
    print(json.dumps({"threads": args.threads, "gflops": result}, indent=1))


if __name__ == "__main__":
    main()
