"""The nightly fuzzed corpus: thousands of generated broken inputs per family (configs, dataset
files, adapter folders, checkpoints, sweep specs, predictions files) fed to the ``lladapt`` CLI in
this process, each checked against the property of ``tests/fuzz/cli_property.py``: exit 0, or 1
or 2 with one clear error line; never a traceback; a failed command changes no file.

    .venv/bin/python benchmarks/fuzz_corpus.py                       # 2,000 per family, seed 0
    .venv/bin/python benchmarks/fuzz_corpus.py --cases 200 --family adapter --seed 7

Writes ``benchmarks/results/<date>-fuzz-corpus.json`` (per family: cases, exit codes, the most
frequent error messages with their paths blanked, seconds, and the failing case if one broke the
property, as hypothesis shrank it). Exits 1 when a case broke the property. The suite runs the
same corpus with fewer cases (tests/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz.corpus import FAMILIES, Corpus, run_family  # noqa: E402


def _kind(error: str, root: Path) -> str:
    """An error line with its temporary paths blanked, so that alike errors count together."""
    text = error.replace(str(root), "TMP")
    return re.sub(r"TMP/[\w.-]+-\w{8}", "CASE", text)[:160]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=2000, help="cases per family (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", action="append", choices=FAMILIES, help="only these families")
    parser.add_argument("--model", default=None, help="base model folder (default: ../shared's stories260k)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from lladapt.testing import stories260k_dir

    model = args.model or stories260k_dir()
    if model is None:
        parser.error("no model: pass --model or provide ../shared/models/stories260k")
    root = Path(tempfile.mkdtemp(prefix="lladapt-fuzz-"))
    os.chdir(root)  # a relative path in a fuzzed file lands here
    corpus = Corpus(root, str(model))
    report = {"seed": args.seed, "cases_per_family": args.cases, "model": str(model), "families": {}}
    failed = False
    for family in args.family or FAMILIES:
        exits: collections.Counter[int] = collections.Counter()
        errors: collections.Counter[str] = collections.Counter()

        def record(outcome, exits=exits, errors=errors):
            exits[outcome.exit_code] += 1
            if outcome.error:
                errors[_kind(outcome.error, root)] += 1

        started = time.perf_counter()
        failure = None
        try:
            run_family(corpus, family, args.cases, args.seed, record)
        except Exception as exc:  # the property broke: recorded, the next family still runs
            failure, failed = f"{type(exc).__name__}: {exc}"[:4000], True
        entry = {"cases": sum(exits.values()), "exit_codes": {str(k): v for k, v in sorted(exits.items())},
                 "tracebacks": 0 if failure is None else None, "failure": failure,
                 "seconds": round(time.perf_counter() - started, 1),
                 "distinct_errors": len(errors), "most_frequent_errors": dict(errors.most_common(15))}
        report["families"][family] = entry
        print(f"{family:<12} {entry['cases']:>5} cases  exits {entry['exit_codes']}  {entry['seconds']} s"
              + ("" if failure is None else "  PROPERTY BROKEN"), flush=True)
    out = args.out or ROOT / "benchmarks" / "results" / f"{time.strftime('%Y-%m-%d')}-fuzz-corpus.json"
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"results: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
