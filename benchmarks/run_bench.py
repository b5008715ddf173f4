"""lladapt's adapters against transformers + PEFT, measured in the same run.

For each adapter configuration (``setups.SETUPS``) both stacks put the adapter on their own fresh
copy of the same base model, lladapt's adapter weights are copied into PEFT's, and then:

1. cross-check: the logits (eval mode) and the adapter gradients of the two must agree within
   ``--tolerance`` (1e-5), so that the timings compare the same computation;
2. training step (forward + backward + AdamW step on a fixed micro batch, fp32), lladapt and PEFT
   alternating step by step (the order flipping each pair) so both share the machine's noise;
   median seconds per step and the median of the per-pair ratios;
3. greedy generation (batch 8, ``--new-tokens`` forced new tokens, left-padded prompts) with the
   adapter attached, rotating base model / lladapt / PEFT; tokens per second, and whether the two
   stacks generated the same tokens;
4. peak memory of training, one subprocess per configuration and stack (``peak_memory.py``).

Ratios are lladapt / PEFT (for times: below 1 means lladapt is faster; for tokens per second:
above 1 means lladapt is faster). The absolute numbers depend on the machine's load; the ratios
are what to read.

Usage::

    .venv/bin/python benchmarks/run_bench.py --model stories260k      # ~1-2 minutes
    .venv/bin/python benchmarks/run_bench.py --model smollm2          # ~5-10 minutes on 2 cores

Writes ``benchmarks/results/<date>-<model>.json`` and a markdown table next to it (``.md``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import setups

from lladapt.adapters.count import count_module_parameters

#: per-model defaults: (timed steps, warm-up steps, generation repeats)
DEFAULTS = {"smollm2": (6, 1, 3), "stories260k": (30, 3, 15)}

PROMPTS = [
    "Once upon a time, there was a little girl who",
    "The capital of France is",
    "Question: Tom has 3 apples and buys 5 more. How many apples does he have?\nAnswer:",
    "def fibonacci(n):",
    "The best way to learn a new language is",
    "One day, a big dog",
    "Here is a short poem about the sea:",
    "Translate to French: good morning",
]


# --------------------------------------------------------------------------- helpers


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=setups.BENCH_DIR, capture_output=True,
            text=True, check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def _machine(threads: int, device: str) -> dict[str, Any]:
    import peft
    import torch
    import transformers

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _randomise(model: Any, seed: int) -> None:
    """Give the adapter non-trivial weights (LoRA's B starts at zero, which would make every
    cross-check pass trivially): N(0, 0.02) for every trainable tensor."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, tensor in model.named_adapter_tensors():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)


def _copy_to_peft(setup: setups.Setup, lladapt_model: Any, peft_model: Any) -> None:
    """Copy lladapt's adapter tensors into PEFT's parameters (every PEFT trainable parameter must
    receive exactly one)."""
    import torch

    params = dict(peft_model.named_parameters())
    wanted = {n for n, p in params.items() if p.requires_grad}
    copied = set()
    with torch.no_grad():
        for key, tensor in lladapt_model.named_adapter_tensors():
            name = setup.peft_name(key)
            target = params[name]
            if target.shape != tensor.shape:
                raise RuntimeError(f"{key} {tuple(tensor.shape)} vs PEFT {name} {tuple(target.shape)}")
            target.copy_(tensor)
            copied.add(name)
    if copied != wanted:
        raise RuntimeError(f"PEFT parameters not covered: {sorted(wanted - copied)[:5]}")


def _named_grads(setup: setups.Setup, model: Any, stack: str) -> dict[str, Any]:
    if stack == "lladapt":
        return {setup.peft_name(k): t.grad for k, t in model.named_adapter_tensors()}
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def cross_check(setup, models, base_logits, batch, tolerance) -> dict[str, Any]:
    """Logits and gradients of lladapt vs PEFT, same weights, eval mode (no dropout)."""
    logits, grads = {}, {}
    for stack, model in models.items():
        model.eval()
        out = model(**batch)
        out.loss.backward()
        logits[stack] = out.logits.detach()
        grads[stack] = {n: g.detach().clone() for n, g in _named_grads(setup, model, stack).items()}
        model.zero_grad(set_to_none=True)
    logit_diff = (logits["lladapt"] - logits["peft"]).abs().max().item()
    grad_diff = max(
        ((grads["lladapt"][n] - g).abs().max() / g.abs().max().clamp_min(1e-12)).item()
        for n, g in grads["peft"].items()
    )
    effect = (logits["lladapt"] - base_logits).abs().max().item()
    result = {
        "max_abs_logit_diff": logit_diff,
        "max_rel_grad_diff": grad_diff,
        "adapter_effect_on_logits": effect,
        "tolerance": tolerance,
        "passed": logit_diff <= tolerance and grad_diff <= 1e-4 and effect > 100 * tolerance,
    }
    return result


def time_training(models, batch, steps, warmup, device) -> dict[str, Any]:
    """Median seconds per training step, stacks alternating (order flipped every pair)."""
    import torch

    optimizers = {s: torch.optim.AdamW(setups.trainable(m), lr=1e-4) for s, m in models.items()}
    for model in models.values():
        model.train()

    def step(stack: str) -> float:
        model, optimizer = models[stack], optimizers[stack]
        _sync(device)
        start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - start

    order = list(models)
    for _ in range(warmup):
        for stack in order:
            step(stack)
    times: dict[str, list[float]] = {s: [] for s in order}
    for i in range(steps):
        for stack in order if i % 2 == 0 else order[::-1]:
            times[stack].append(step(stack))
    return _summarise(times, "seconds")


def _summarise(samples: dict[str, list[float]], unit: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        stack: {f"median_{unit}": statistics.median(v), "min": min(v), "max": max(v),
                "samples": [round(x, 5) for x in v]}
        for stack, v in samples.items()
    }
    if "lladapt" in samples and "peft" in samples:
        pairs = [a / b for a, b in zip(samples["lladapt"], samples["peft"], strict=True)]
        out["ratio_of_medians"] = out["lladapt"][f"median_{unit}"] / out["peft"][f"median_{unit}"]
        out["median_pair_ratio"] = statistics.median(pairs)
    return out


def time_generation(models, tokenizer, new_tokens, repeats, device) -> dict[str, Any]:
    """Greedy generation of exactly ``new_tokens`` tokens for 8 left-padded prompts; tokens/s per
    stack (base model / lladapt / PEFT rotating), and whether lladapt and PEFT agree."""
    import torch

    tokenizer.padding_side = "left"
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True).to(device)
    for model in models.values():
        model.eval()
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  num_beams=1, pad_token_id=tokenizer.pad_token_id)
    outputs: dict[str, Any] = {}
    rates: dict[str, list[float]] = {s: [] for s in models}
    order = list(models)
    with torch.no_grad():
        for stack in order:  # a short warm-up each
            models[stack].generate(**enc, **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})
        for i in range(repeats):
            for stack in order[i % len(order):] + order[: i % len(order)]:
                _sync(device)
                start = time.perf_counter()
                out = models[stack].generate(**enc, **kwargs)
                _sync(device)
                seconds = time.perf_counter() - start
                rates[stack].append(out[:, enc["input_ids"].shape[1]:].numel() / seconds)
                outputs.setdefault(stack, out)
    result = _summarise(rates, "tokens_per_s")
    result["batch"] = len(PROMPTS)
    result["prompt_tokens"] = int(enc["input_ids"].shape[1])
    result["new_tokens"] = new_tokens
    if "peft" in outputs:
        result["same_tokens_lladapt_peft"] = bool(torch.equal(outputs["lladapt"], outputs["peft"]))
    if "base" in outputs:
        for stack in ("lladapt", "peft"):
            if stack in rates:
                result[f"{stack}_vs_base"] = (
                    result[stack]["median_tokens_per_s"] / result["base"]["median_tokens_per_s"]
                )
        result["adapter_changed_tokens"] = not torch.equal(outputs["base"], outputs["lladapt"])
    return result


def peak_memory(setup: setups.Setup, folder: Path, args) -> dict[str, Any]:
    """One ``peak_memory.py`` subprocess per stack."""
    out = {}
    stacks = ["lladapt", "peft"] if setup.peft_config else ["lladapt"]
    for stack in stacks:
        cmd = [sys.executable, str(setups.BENCH_DIR / "peak_memory.py"), "--model-dir", str(folder),
               "--setup", setup.name, "--stack", stack, "--steps", str(args.memory_steps),
               "--batch", str(args.batch), "--length", str(args.length),
               "--threads", str(args.threads), "--device", args.device]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        out[stack] = json.loads(proc.stdout.strip().splitlines()[-1])
    if "peft" in out:
        out["peak_ratio"] = out["lladapt"]["peak_rss_mb"] / out["peft"]["peak_rss_mb"]
    return out


# --------------------------------------------------------------------------- the run


def bench_setup(setup, folder, base, check_batch, base_logits, args) -> dict[str, Any]:
    print(f"[{setup.name}] {setup.notes}", file=sys.stderr)
    models: dict[str, Any] = {}
    lladapt_model, loaded = setups.build("lladapt", setup, folder, args.device)
    _randomise(lladapt_model, seed=1)
    models["lladapt"] = lladapt_model
    result: dict[str, Any] = {"notes": setup.notes}
    result["trainable_parameters"] = count_module_parameters(lladapt_model, trainable_only=True)
    if setup.peft_config is not None:
        models["peft"], _ = setups.build("peft", setup, folder, args.device)
        _copy_to_peft(setup, lladapt_model, models["peft"])
        result["cross_check"] = cross_check(setup, models, base_logits, check_batch, args.tolerance)
        print(f"  cross-check {result['cross_check']}", file=sys.stderr)
    batch = setups.training_batch(loaded.hf_config.vocab_size, args.batch, args.length, args.device)
    result["load_before"] = _load()
    result["train_step"] = time_training(models, batch, args.steps, args.warmup, args.device)
    print(f"  train {_brief(result['train_step'], 'seconds')}", file=sys.stderr)
    if "peft" in models:  # training moved both apart (dropout); compare generation on equal weights
        _copy_to_peft(setup, lladapt_model, models["peft"])
    gen_models = {"base": base, **models}
    result["generation"] = time_generation(
        gen_models, loaded.tokenizer, args.new_tokens, args.gen_repeats, args.device
    )
    print(f"  generate {_brief(result['generation'], 'tokens_per_s')}", file=sys.stderr)
    result["load_after"] = _load()
    del models, lladapt_model, gen_models
    gc.collect()
    if not args.no_memory:
        result["memory"] = peak_memory(setup, folder, args)
        print(f"  memory {result['memory']}", file=sys.stderr)
    return result


def _brief(summary: dict[str, Any], unit: str) -> str:
    parts = [f"{s}={v[f'median_{unit}']:.4g}" for s, v in summary.items()
             if isinstance(v, dict) and f"median_{unit}" in v]
    if "median_pair_ratio" in summary:
        parts.append(f"ratio={summary['median_pair_ratio']:.3f}")
    return " ".join(parts)


def _cell(d: dict[str, Any], *keys: str, fmt: str = "") -> str:
    """A nested value formatted, or an em dash where the stack or the value is absent."""
    for key in keys:
        if not isinstance(d, dict) or d.get(key) is None:
            return "—"
        d = d[key]
    return format(d, fmt) if not isinstance(d, bool) else str(d).lower()


def markdown(results: dict[str, Any]) -> str:
    """The results as the tables of benchmarks/README.md: training and the cross-check, generation,
    memory. Ratios are lladapt / PEFT, the median of the per-pair ratios."""
    m, cfg = results["machine"], results["settings"]
    lines = [
        f"`{results['command']}`: {results['date']}, commit {results['commit']}, "
        f"{m['cpu_count']} CPUs ({m['processor']}), {m['torch_threads']} torch threads, device "
        f"{m['device']}; torch {m['torch']}, transformers {m['transformers']}, PEFT {m['peft']}. "
        f"Load average (1/5/15 min) {results['load_start']} at start, {results['load_end']} at "
        f"end. {cfg['steps']} timed training steps per stack after {cfg['warmup']} warm-up, "
        f"micro batch {cfg['batch']} x {cfg['length']} tokens; {cfg['gen_repeats']} timed "
        f"generate() calls per model; {results['wall_seconds']:.0f} s in all.",
        "",
        "| setup | trainable | step lladapt (s) | step PEFT (s) | lladapt / PEFT "
        "| logits max abs diff | grads max rel diff |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows = results["setups"].items()
    for name, r in rows:
        t, c = r["train_step"], r.get("cross_check", {})
        lines.append(
            f"| {name} | {r['trainable_parameters']:,} | {_cell(t, 'lladapt', 'median_seconds', fmt='.3f')} "
            f"| {_cell(t, 'peft', 'median_seconds', fmt='.3f')} | {_cell(t, 'median_pair_ratio', fmt='.3f')} "
            f"| {_cell(c, 'max_abs_logit_diff', fmt='.1e')} | {_cell(c, 'max_rel_grad_diff', fmt='.1e')} |"
        )
    lines += [
        "",
        "| setup | base (tok/s) | lladapt (tok/s) | PEFT (tok/s) | lladapt / PEFT | lladapt / base "
        "| PEFT / base | same tokens |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in rows:
        g = r["generation"]
        lines.append(
            f"| {name} | {_cell(g, 'base', 'median_tokens_per_s', fmt='.1f')} "
            f"| {_cell(g, 'lladapt', 'median_tokens_per_s', fmt='.1f')} "
            f"| {_cell(g, 'peft', 'median_tokens_per_s', fmt='.1f')} "
            f"| {_cell(g, 'median_pair_ratio', fmt='.3f')} | {_cell(g, 'lladapt_vs_base', fmt='.3f')} "
            f"| {_cell(g, 'peft_vs_base', fmt='.3f')} | {_cell(g, 'same_tokens_lladapt_peft')} |"
        )
    if any("memory" in r for _, r in rows):
        cuda = m["device"].startswith("cuda")
        lines += [
            "",
            "| setup | peak RSS lladapt / PEFT (MB) | RSS growth in training lladapt / PEFT (MB) "
            "| saved for backward lladapt / PEFT (MB) |" + (" CUDA peak lladapt / PEFT (MB) |" if cuda else ""),
            "|---|---:|---:|---:|" + ("---:|" if cuda else ""),
        ]
        for name, r in rows:
            mem = r.get("memory", {})

            def pair(key: str, fmt: str, mem: dict = mem) -> str:
                return " / ".join(_cell(mem, stack, key, fmt=fmt) for stack in setups.STACKS)

            lines.append(
                f"| {name} | {pair('peak_rss_mb', 'd')} | {pair('train_growth_mb', 'd')} "
                f"| {pair('saved_for_backward_mb', '.2f')} |"
                + (f" {pair('cuda_peak_mb', 'd')} |" if cuda else "")
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=setups.MODELS, default="smollm2")
    parser.add_argument("--setups", nargs="+", choices=sorted(setups.SETUPS),
                        default=list(setups.SETUPS))
    parser.add_argument("--steps", type=int, help="timed training steps per stack")
    parser.add_argument("--warmup", type=int, help="untimed training steps per stack first")
    parser.add_argument("--gen-repeats", type=int, help="timed generate() calls per stack")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4, help="micro batch (sequences)")
    parser.add_argument("--length", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--memory-steps", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--out", type=Path, help="results file (default benchmarks/results/<date>-<model>.json)")
    args = parser.parse_args(argv)
    steps, warmup, repeats = DEFAULTS[args.model]
    args.steps = args.steps if args.steps is not None else steps
    args.warmup = args.warmup if args.warmup is not None else warmup
    args.gen_repeats = args.gen_repeats if args.gen_repeats is not None else repeats
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        folder = setups.model_dir(args.model)
    except setups.AssetMissing as exc:
        print(f"bench skipped: {exc}", file=sys.stderr)
        return 0
    setups.set_threads(args.threads)
    import torch

    torch.manual_seed(0)
    results: dict[str, Any] = {
        "command": "python benchmarks/run_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "model": args.model,
        "model_dir": str(folder),
        "machine": _machine(args.threads, args.device),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "load_start": _load(),
        "setups": {},
    }
    base_loaded = setups.load_base(folder, args.device)
    base = base_loaded.model.eval()
    check_batch = setups.training_batch(base_loaded.hf_config.vocab_size, 2, 32, args.device, seed=7)
    with torch.no_grad():
        base_logits = base(**check_batch).logits
    for name in args.setups:
        results["setups"][name] = bench_setup(
            setups.SETUPS[name], folder, base, check_batch, base_logits, args
        )
    results["load_end"] = _load()
    results["wall_seconds"] = time.perf_counter() - started
    day = dt.date.today().isoformat()
    out = args.out or setups.RESULTS_DIR / f"{day}-{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    out.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    failed = [n for n, r in results["setups"].items() if not r.get("cross_check", {"passed": True})["passed"]]
    if failed:
        print(f"CROSS-CHECK FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
