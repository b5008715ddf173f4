"""``lladapt serve`` under load against serving one request at a time.

On SmolLM2-135M-Instruct (fp32, CPU) with 4 adapters (two LoRAs and two series adapters, random
weights with nonzero B / up matrices, so that each changes the answers), the same greedy
requests (alpaca-prompted instructions, ``--max-tokens`` new tokens, round-robin over the
adapters) are answered three ways:

1. **server, concurrent**: a real uvicorn server on 127.0.0.1 (in this process) and
   ``--clients`` client threads, each sending its share of the requests one after the other;
   the server batches them continuously, LoRA and series rows in shared forward passes;
2. **(a) server, one at a time**: the same server, one client, one request after the other;
3. **(b) generate, adapter swapped per request**: one base model; per request the request's
   adapter is attached (from tensors already read from its folder), ``model.generate`` (greedy,
   batch 1) answers, and the adapter is taken off again: what a script without a server does.

Generated tokens per second of each, repeated ``--repeats`` times (the three modes interleaved so
that they see the same background load); the ratios server / (a) and server / (b) with their
spread. Also whether every mode gave the same answers.

    .venv/bin/python benchmarks/serve_speed.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from setups import RESULTS_DIR, AssetMissing, load_base, model_dir  # noqa: E402

ADAPTERS = {
    "lora-qv": ({"name": "lora", "r": 8, "alpha": 16}, None),
    "lora-all": ({"name": "lora", "r": 16, "alpha": 32},
                 {"name": "modules", "modules": ["q", "k", "v", "up", "down"]}),
    "series-mlp": ({"name": "series", "bottleneck_size": 64}, None),
    "series-attn": ({"name": "series", "bottleneck_size": 32}, {"name": "attention"}),
}
INSTRUCTIONS = [
    "Add 23 and 19.", "Write a sentence about the sea.", "What is the capital of France?",
    "Name three fruits.", "Tom has 7 apples and eats 2. How many are left?",
    "Explain what a verb is.", "Give me a synonym for happy.", "Translate 'good morning' into Spanish.",
]


def save_adapters(folder: Path, root: Path) -> dict[str, Path]:
    """Each adapter of :data:`ADAPTERS` attached to a fresh base, randomised, saved."""
    import torch

    from lladapt.adapters.build import build_adapter, build_placement
    from lladapt.adapters.model import attach

    paths = {}
    for seed, (name, (adapter, placement)) in enumerate(ADAPTERS.items()):
        loaded = load_base(folder)
        adapted = attach(loaded.model, loaded.layout, build_adapter(adapter),
                         build_placement(placement) if placement else None)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in adapted.trainable_parameters():
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
        paths[name] = adapted.save_adapter(root / name)
    return paths


def requests(count: int) -> list[tuple[str, str]]:
    from lladapt.components.interfaces import Example
    from lladapt.data.loading import get_template

    template = get_template("alpaca")
    names = list(ADAPTERS)
    return [(names[i % len(names)], template.eval_prompt(Example(instruction=INSTRUCTIONS[i % len(INSTRUCTIONS)])))
            for i in range(count)]


def through_server(url: str, jobs: list[tuple[str, str]], clients: int, max_tokens: int) -> tuple[float, list]:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    answers: list = [None] * len(jobs)

    def work(c: int) -> None:
        for i in range(c, len(jobs), clients):
            model, prompt = jobs[i]
            r = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0)
            answers[i] = (r.choices[0].text, r.usage.completion_tokens)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(work, range(clients)))
    return time.perf_counter() - started, answers


def swapping(folder: Path, paths: dict[str, Path], jobs: list[tuple[str, str]], max_tokens: int) -> tuple[float, list]:
    """(b): attach the request's adapter, generate, detach; one request at a time."""
    import torch

    from lladapt.adapters.model import attach_saved, read_saved
    from lladapt.evaluation.generation import Decoding, finish, generation_config, stop_token_ids

    loaded = load_base(folder)
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    config = generation_config(model, tokenizer, Decoding(max_new_tokens=max_tokens, compact=False))
    stops = stop_token_ids(model, tokenizer)
    answers = []
    started = time.perf_counter()
    for name, prompt in jobs:
        adapted = attach_saved(model, loaded.layout, read_saved(model, loaded.layout, paths[name])).eval()
        enc = tokenizer([prompt], return_tensors="pt")
        with torch.inference_mode():
            out = adapted.generate(**enc, generation_config=config)
        done = finish(tokenizer, out[0, enc["input_ids"].shape[1]:].tolist(), stops, ())
        answers.append((done.text, done.tokens))
        adapted.unload()
    return time.perf_counter() - started, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", choices=["smollm2", "stories260k"])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    try:
        folder = model_dir(args.model)
    except AssetMissing as exc:
        print(f"bench skipped: {exc}")
        return
    from lladapt.config import ModelSection
    from lladapt.serving.app import create_app
    from lladapt.serving.models import load_served
    from lladapt.serving.server import BackgroundServer
    from lladapt.serving.spec import ServedAdapter, ServeSpec

    with tempfile.TemporaryDirectory() as tmp:
        paths = save_adapters(folder, Path(tmp))
        spec = ServeSpec(ModelSection(source=str(folder), dtype="float32"), "alpaca",
                         {name: ServedAdapter(path, "alpaca") for name, path in paths.items()})
        served = load_served(spec, max_rows=32)
        server = BackgroundServer(create_app(served))
        jobs = requests(args.requests)
        through_server(server.url, jobs[:4], 4, 4)  # warm up
        samples = []
        for repeat in range(args.repeats):
            sample = {}
            for mode, call in (
                ("server", lambda: through_server(server.url, jobs, args.clients, args.max_tokens)),
                ("one_at_a_time", lambda: through_server(server.url, jobs, 1, args.max_tokens)),
                ("generate_swapping", lambda: swapping(folder, paths, jobs, args.max_tokens)),
            ):
                seconds, answers = call()
                tokens = sum(n for _, n in answers)
                sample[mode] = {"seconds": round(seconds, 3), "tokens": tokens,
                                "tokens_per_s": round(tokens / seconds, 2), "answers": answers}
                print(f"repeat {repeat + 1} {mode}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tokens/s",
                      file=sys.stderr)
            sample["load_average"] = os.getloadavg()
            samples.append(sample)
        server.stop()
    report(args, samples)


def report(args: argparse.Namespace, samples: list[dict]) -> None:
    import fastapi
    import torch
    import transformers

    def ratios(mode: str) -> list[float]:
        return [s["server"]["tokens_per_s"] / s[mode]["tokens_per_s"] for s in samples]

    def spread(values: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
                "max": round(max(values), 2)}

    reference = [a[0] for a in samples[0]["server"]["answers"]]
    summary = {
        "model": args.model, "adapters": {k: v[0] | ({"placement": v[1]} if v[1] else {}) for k, v in ADAPTERS.items()},
        "requests": args.requests, "clients": args.clients, "max_tokens": args.max_tokens,
        "repeats": args.repeats, "threads": args.threads,
        "tokens_per_s": {mode: spread([s[mode]["tokens_per_s"] for s in samples])
                         for mode in ("server", "one_at_a_time", "generate_swapping")},
        "server_over_one_at_a_time": spread(ratios("one_at_a_time")),
        "server_over_generate_swapping": spread(ratios("generate_swapping")),
        "same_answers_in_every_mode": all(
            [a[0] for a in s[mode]["answers"]] == reference
            for s in samples for mode in ("server", "one_at_a_time", "generate_swapping")),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "fastapi": fastapi.__version__, "python": platform.python_version()},
        "cpu_count": os.cpu_count(), "threads_alive": threading.active_count(),
    }
    out = args.out or RESULTS_DIR / f"{time.strftime('%Y-%m-%d')}-serve-speed.json"
    out.write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))
    print(json.dumps(summary, indent=2))
    print(f"written: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
