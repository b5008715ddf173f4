"""Training throughput and memory: lladapt's trainer against transformers' ``Trainer`` (+ PEFT),
both sides back to back in one command, on the same base weights, data, tokenization and recipe.

The workload (issue 10): SmolLM2-135M-Instruct fp32, the first 192 ``math_data`` examples
(alpaca template, cutoff 256, prompt in the loss), micro batch 4 x accumulation 4, one epoch,
lr 3e-4 with 100 warm-up steps, 2 threads; LoRA r=32 alpha=64 dropout 0.05 on q, k, v, up, down.

* lladapt: ``lladapt.training.train`` with the run's defaults (``precision: auto``,
  ``group_by_length``, no padding multiple);
* Trainer: the paper code's recipe, ``DataCollatorForSeq2Seq(pad_to_multiple_of=8)``, random
  order, ``Trainer(...).train()``; for ``--adapter lora`` the model is PEFT's, for ``series`` /
  ``parallel`` it is lladapt's adapted model (PEFT has no bottleneck adapters), so the loops are
  compared, not the adapters.

Each side runs in a subprocess of its own, so its peak resident set (``VmHWM``) is its own; the
order alternates between repeats. Throughput is non-pad tokens trained on per second of the
training call (model loading and tokenization excluded on both sides).

    .venv/bin/python benchmarks/train_speed.py --steps 3                # quick check, ~2 min
    .venv/bin/python benchmarks/train_speed.py --repeats 3              # the full workload
    .venv/bin/python benchmarks/train_speed.py --bf16 --repeats 3       # like against like
    .venv/bin/python benchmarks/train_speed.py --adapter series --steps 4

Writes ``benchmarks/results/<date>-train-<adapter>[-bf16].json`` (every sample, the settings,
machine and versions) and prints a summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SETUP_FOR = {"lora": "lora-r32-qkvud", "series": "series-mlp", "parallel": "parallel-mlp"}
#: the paper's datasets beside the project (``../shared``): every benchmark's ``--data-dir`` default.
DATA_DIR = str(HERE.parent.parent / "shared" / "data" / "llm-adapters")
SIDES = ("lladapt", "trainer")


# --------------------------------------------------------------------------- one side (child)


def _vm_hwm_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _encoded(tokenizer: Any, args: argparse.Namespace) -> list[Any]:
    from lladapt.data.loading import get_template, load_examples
    from lladapt.data.tokenization import encode_for_training

    examples = load_examples("math_data", data_dir=Path(args.data_dir), limit=args.examples)
    template = get_template("alpaca")
    return [encode_for_training(tokenizer, template, ex, cutoff_len=args.cutoff) for ex in examples]


def lladapt_workload(adapter: str = "lora", examples: int = 192, cutoff: int = 256,
                     data_dir: str = DATA_DIR) -> tuple[Any, Any, list[Any]]:
    """lladapt's side of the workload on SmolLM2, for the scripts that look inside its training
    (profiles, timings, loss curves): the adapted model, the loaded base and the encoded examples."""
    import setups

    model, loaded = setups.build("lladapt", setups.SETUPS[SETUP_FOR[adapter]], setups.model_dir("smollm2"))
    args = argparse.Namespace(data_dir=data_dir, examples=examples, cutoff=cutoff)
    return model, loaded, _encoded(loaded.tokenizer, args)


def _train(model: Any, encoded: list[Any], pad_token_id: int, **fields: Any) -> Any:
    """lladapt's ``train`` on the workload's recipe (lr 3e-4, 100 warm-up steps, 4 x 4
    micro-batches, no progress bar, no checkpoints) with ``fields`` of ``TrainSection`` on top."""
    from lladapt.config import TrainSection
    from lladapt.training import train

    settings = TrainSection(batch_size=16, micro_batch_size=4, warmup_steps=100, progress="none", save_steps=0,
                            **fields)
    return train(model, encoded, settings, learning_rate=3e-4, pad_token_id=pad_token_id, echo=lambda _: None)


def train_steps(model: Any, loaded: Any, encoded: list[Any], steps: int, precision: str) -> Any:
    """``steps`` optimizer steps of lladapt's side of the workload on :func:`lladapt_workload`'s
    model, for the scripts that time or profile the steps; returns ``train``'s result."""
    return _train(model, encoded, loaded.tokenizer.pad_token_id, max_steps=steps, precision=precision)


def _run_lladapt(model: Any, tokenizer: Any, encoded: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    result = _train(model, encoded, tokenizer.pad_token_id, epochs=1, max_steps=args.steps,
                    precision="bf16" if args.bf16 else args.lladapt_precision, logging_steps=1,
                    **({"compile": True} if args.compile else {}))
    return {"seconds": result.seconds, "tokens": result.real_tokens, "padded_share": result.padded_share,
            "steps": result.steps, "losses": result.losses,
            "compile_seconds": getattr(result, "compile_seconds", 0.0)}  # absent before issue 20


def _run_trainer(model: Any, tokenizer: Any, encoded: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    rows = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels}
            for e in encoded]
    inner = DataCollatorForSeq2Seq(tokenizer, pad_to_multiple_of=8, return_tensors="pt", padding=True)
    counts = {"real": 0, "padded": 0}

    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = inner(features)
        counts["real"] += int(batch["attention_mask"].sum())
        counts["padded"] += batch["input_ids"].numel()
        return batch

    losses: list[tuple[int, float]] = []

    class Losses(TrainerCallback):
        def on_log(self, _args: Any, state: Any, _control: Any, logs: Any = None, **_: Any) -> None:
            if logs and "loss" in logs:
                losses.append((state.global_step, float(logs["loss"])))

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=4, gradient_accumulation_steps=4,
            num_train_epochs=1, max_steps=args.steps or -1, learning_rate=3e-4, warmup_steps=100,
            logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=args.bf16,
            seed=42, disable_tqdm=True, dataloader_num_workers=0,
            remove_unused_columns=False,
        )
        trainer = Trainer(model=model, args=targs, train_dataset=rows,
                          data_collator=collate, callbacks=[Losses()])
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "tokens": counts["real"],
            "padded_share": 1 - counts["real"] / max(1, counts["padded"]),
            "steps": trainer.state.global_step, "losses": losses}


def flops_per_token(model: Any) -> dict[str, int]:
    """Useful training FLOPs per non-pad token (docs/benchmarks.md, "MFU"): every frozen matmul
    weight costs 2 (forward) + 2 (gradient of its input) FLOPs per token and needs no weight
    gradient; every trainable weight costs 6 (forward, input gradient, weight gradient). Embedding
    lookups, norms, attention scores and the loss are not counted; the output head counts once
    (tied to the embedding in SmolLM2)."""
    import torch

    seen: set[int] = set()
    frozen = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and not weight.requires_grad and id(weight) not in seen:
            seen.add(id(weight))
            frozen += weight.numel()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"frozen_matmul_params": frozen, "trainable_params": trainable,
            "flops_per_token": 4 * frozen + 6 * trainable}


def child(args: argparse.Namespace) -> None:
    import setups

    setups.set_threads(args.threads)
    from transformers import set_seed

    set_seed(42)
    setup = setups.SETUPS[SETUP_FOR[args.adapter]]
    stack = "peft" if args.side == "trainer" and args.adapter == "lora" else "lladapt"
    model, loaded = setups.build(stack, setup, setups.model_dir(args.model))
    encoded = _encoded(loaded.tokenizer, args)
    run = _run_lladapt if args.side == "lladapt" else _run_trainer
    out = run(model, loaded.tokenizer, encoded, args)
    out.update(flops_per_token(model))
    out["tokens_per_second"] = out["tokens"] / out["seconds"]
    out["peak_rss_mb"] = _vm_hwm_mb()
    print("RESULT " + json.dumps(out))


# --------------------------------------------------------------------------- both sides (parent)


def _side(side: str, args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, *argv]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if args.no_fused:
        env["LLADAPT_FUSED_ADAPTERS"] = "0"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"the {side} side failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT "):])


def machine() -> dict[str, Any]:
    import importlib.metadata as md

    cpu, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    import torch

    versions = {name: md.version(name) for name in ("torch", "transformers", "peft", "accelerate")}
    return {"cpu": cpu, "cpus": os.cpu_count(), "bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"}),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "versions": versions,
            "loadavg": os.getloadavg()}


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _lladapt_bf16(args: argparse.Namespace) -> bool:
    """Whether lladapt's side trains in bf16 (``auto`` resolves as the trainer does here)."""
    from lladapt.training.precision import mixed_precision

    return mixed_precision("bf16" if args.bf16 else args.lladapt_precision) == "bf16"


def matmul_peaks(threads: int, dtypes: set[str]) -> dict[str, float]:
    """This machine's matmul peaks (GFLOP/s) at ``threads`` in ``dtypes``, measured now
    (``matmul_peak.py``): the denominators of MFU. Only the precisions the sides ran in: a bf16
    product on a CPU without native bf16 (AVX2) is emulated and takes minutes to time."""
    import matmul_peak
    import torch

    torch.set_num_threads(threads)
    return {d: max(matmul_peak.peak(d, 5).values()) for d in sorted(dtypes)}


def _repeat(i: int, sides: tuple[str, ...], args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """One repeat: each side in its own process, the order alternating between repeats."""
    order = sides if i % 2 == 0 else sides[::-1]
    pair: dict[str, Any] = {side: _side(side, args, argv) for side in order}
    pair["order"] = list(order)
    line = ", ".join(f"{side} {pair[side]['tokens_per_second']:.1f} tok/s ({pair[side]['peak_rss_mb']:.0f} MB, "
                     f"{pair[side]['padded_share']:.1%} pad, compile {pair[side].get('compile_seconds', 0):.0f} s)"
                     for side in sides)
    if len(sides) == 2:
        line += f": {pair['lladapt']['tokens_per_second'] / pair['trainer']['tokens_per_second']:.2f}x"
    print(f"repeat {i + 1}: {line}", flush=True)
    return pair


def _summary(samples: list[dict[str, Any]], sides: tuple[str, ...], args: argparse.Namespace) -> dict[str, Any]:
    """Median and range of each side's throughput, peak RSS and MFU (against this machine's
    matmul peak in the side's precision, measured now), and the lladapt / Trainer ratios."""
    precisions = {side: "bfloat16" if args.bf16 or (side == "lladapt" and _lladapt_bf16(args)) else "float32"
                  for side in sides}
    peaks = matmul_peaks(args.threads, set(precisions.values()))
    summary: dict[str, Any] = {}
    for side, precision in precisions.items():
        flops = samples[0][side]["flops_per_token"]
        summary[side] = {
            "tokens_per_second": _spread([s[side]["tokens_per_second"] for s in samples]),
            "peak_rss_mb": _spread([s[side]["peak_rss_mb"] for s in samples]),
            "padded_share": statistics.median(s[side]["padded_share"] for s in samples),
            "matmul_peak_gflops": {"dtype": precision, "gflops": peaks[precision]},
            "mfu": _spread([s[side]["tokens_per_second"] * flops / (peaks[precision] * 1e9) for s in samples]),
        }
    if len(sides) == 2:
        summary["speed_ratio"] = _spread([s["lladapt"]["tokens_per_second"] / s["trainer"]["tokens_per_second"]
                                          for s in samples])
        summary["rss_ratio"] = _spread([s["lladapt"]["peak_rss_mb"] / s["trainer"]["peak_rss_mb"] for s in samples])
    return summary


def parent(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    sides = tuple(args.sides.split(","))
    started = time.perf_counter()
    samples = [_repeat(i, sides, args, argv) for i in range(args.repeats)]
    from provenance import commit

    return {"command": "python benchmarks/train_speed.py " + " ".join(argv), "commit": commit(),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine(),
            "settings": {k: v for k, v in vars(args).items() if k != "side"},
            "summary": _summary(samples, sides, args), "samples": samples,
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", choices=sorted(SETUP_FOR), default="lora")
    parser.add_argument("--bf16", action="store_true", help="like against like: Trainer bf16=True, lladapt precision bf16")
    parser.add_argument("--lladapt-precision", default="auto", help="lladapt's train.precision (default: auto)")
    parser.add_argument("--compile", action="store_true", help="lladapt: train.compile true (compile time reported apart)")
    parser.add_argument("--no-fused", action="store_true", help="lladapt: the eager adapter branches (LLADAPT_FUSED_ADAPTERS=0)")
    parser.add_argument("--sides", default="lladapt,trainer", help="which sides to run (a lever table runs lladapt alone)")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many optimizer steps")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--examples", type=int, default=192)
    parser.add_argument("--cutoff", type=int, default=256)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data-dir", default=DATA_DIR)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        child(args)
        return
    record = parent(args, argv)
    s = record["summary"]
    if "speed_ratio" in s:
        print(f"lladapt / Trainer non-pad tokens/s: {s['speed_ratio']['median']:.2f}x "
              f"({s['speed_ratio']['min']:.2f}-{s['speed_ratio']['max']:.2f}); peak RSS {s['rss_ratio']['median']:.2f}x")
    for side in args.sides.split(","):
        print(f"{side}: MFU {s[side]['mfu']['median']:.1%} of the {s[side]['matmul_peak_gflops']['dtype']} "
              f"matmul peak ({s[side]['matmul_peak_gflops']['gflops']:.0f} GFLOP/s)")
    name = f"{dt.date.today().isoformat()}-train-{args.adapter}{'-bf16' if args.bf16 else ''}{'-steps' + str(args.steps) if args.steps else ''}.json"
    out = args.out or HERE / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
