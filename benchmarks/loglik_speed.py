"""Log-likelihood scoring speed: lladapt's ``eval.scoring: loglik`` against lm-evaluation-harness's
HF backend (``lm_eval.models.huggingface.HFLM.loglikelihood``) on the same (prompt, choice) pairs:
SmolLM2-135M-Instruct fp32, the first ``--items`` ARC-Easy test items of the paper's data, the
alpaca evaluation prompt, each choice's text as the paper's commonsense sets give it.

- lladapt: :func:`lladapt.evaluation.loglik.continuation_logliks`, ``--batch-size`` distinct
  prompts per pass (each prompt computed once for all its choices);
- lm-eval: ``HFLM(pretrained=<the same model object>, batch_size=<batch-size x choices per item>)``,
  so that both sides put about as many pairs in a pass. lm-eval tokenizes context + continuation
  together and splits them (its ``_encode_pair``); lladapt tokenizes them apart, so a pair's
  tokens can differ at the boundary: the picks are compared and the differing items listed.

Both sides warmed up (untimed, 4 items), then timed ``--repeats`` times, the order alternating.
lm-eval is not a dependency of lladapt: install it beside the venv, e.g.

    .venv/bin/pip install --target /tmp/lmeval-pkgs --no-deps "lm_eval==0.4.*"
    PYTHONPATH=/tmp/lmeval-pkgs .venv/bin/python benchmarks/loglik_speed.py --items 400 --repeats 2
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


def _pairs(args: argparse.Namespace, tokenizer) -> tuple[list[list[tuple[str, str]]], list[str], list[list[str]]]:
    """Per item: its (prompt, choice text) pairs, its answer and its choice keys."""
    from lladapt.config import DatasetRef
    from lladapt.data.loading import build_dataset, get_template, load_examples

    dataset = build_dataset("arc_easy", data_dir=args.data_dir)
    examples = load_examples(DatasetRef(name="arc_easy"), "test", data_dir=args.data_dir, limit=args.items,
                             purpose="eval")
    template = get_template("alpaca")
    items, keys = [], []
    for ex in examples:
        choices = dataset.choices(ex)
        items.append([(template.eval_prompt(ex), text) for text in choices.values()])
        keys.append(list(choices))
    return items, [ex.answer for ex in examples], keys


def _lladapt(model, tokenizer, items, batch_size):
    from lladapt.evaluation.loglik import continuation_logliks

    flat = [pair for pairs in items for pair in pairs]
    return [s for s, _ in continuation_logliks(model, tokenizer, flat, batch_size)]


def _lm_eval(lm, items):
    from lm_eval.api.instance import Instance

    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(p for pairs in items for p in pairs)]
    return [s for s, _ in lm.loglikelihood(requests, disable_tqdm=True)]


def _picks(scores, items, keys):
    """Each item's choice with the highest summed score, ties to the first: the evaluator's own
    rule (:func:`lladapt.evaluation.loglik.pick`)."""
    from lladapt.evaluation.loglik import pick

    picks, at = [], 0
    for pairs, names in zip(items, keys, strict=True):
        picks.append(names[pick([(s, 1) for s in scores[at : at + len(pairs)]], normalize=False)])
        at += len(pairs)
    return picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=8, help="items (distinct prompts) per lladapt pass")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "llm-adapters"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import setups
    import torch
    from lm_eval.models.huggingface import HFLM

    setups.set_threads(args.threads)
    loaded = setups.load_base(setups.model_dir("smollm2"))
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    items, answers, keys = _pairs(args, tokenizer)
    per_item = statistics.mean(len(p) for p in items)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, device="cpu", dtype=torch.float32,
              batch_size=max(1, round(args.batch_size * per_item)))
    sides = {"lladapt": lambda its: _lladapt(model, tokenizer, its, args.batch_size),
             "lm_eval": lambda its: _lm_eval(lm, its)}
    for run in sides.values():
        run(items[:4])
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    scores: dict[str, list[float]] = {}
    for repeat in range(args.repeats):
        for name in (list(sides) if repeat % 2 == 0 else list(sides)[::-1]):
            started = time.perf_counter()
            scores[name] = sides[name](items)
            seconds[name].append(time.perf_counter() - started)
    picks = {name: _picks(scores[name], items, keys) for name in sides}
    differ = [i for i, (a, b) in enumerate(zip(picks["lladapt"], picks["lm_eval"], strict=True)) if a != b]
    median = {name: statistics.median(v) for name, v in seconds.items()}
    from provenance import commit

    result = {
        "commit": commit(), "items": len(items), "pairs": sum(len(p) for p in items), "threads": args.threads,
        "batch_size": {"lladapt_prompts": args.batch_size, "lm_eval_pairs": lm.batch_size},
        "seconds": seconds, "median_seconds": median,
        "speedup_vs_lm_eval": round(median["lm_eval"] / median["lladapt"], 3),
        "same_picks": len(items) - len(differ), "differing_items": differ,
        "accuracy": {name: sum(p == a for p, a in zip(picks[name], answers, strict=True)) / len(items)
                     for name in sides},
        "max_abs_score_difference": max(abs(a - b) for a, b in zip(scores["lladapt"], scores["lm_eval"], strict=True)),
        "versions": {"lm_eval": __import__("lm_eval").__version__},
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
