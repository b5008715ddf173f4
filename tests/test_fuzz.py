"""The fuzzed corpus, a few hundred cases with a fixed seed (the same cases every run): generated
configs, dataset files, adapter folders, checkpoints, sweep specs and predictions files fed to the
CLI in this process. Every case exits 0, or 1 or 2 with one clear error line; no traceback; a
command that fails changes no file (tests/fuzz/cli_property.py). The nightly run with thousands of
cases per family is ``benchmarks/fuzz_corpus.py``; its last results are in docs/reliability.md."""

from __future__ import annotations

import collections

import pytest

from tests.fuzz.corpus import Corpus, run_family

#: cases per family in the suite (448 in all, about 30 s on 2 cores); the nightly run draws 2,000.
CASES = {"config": 120, "sweep": 80, "dataset": 80, "predictions": 120, "adapter": 40, "checkpoint": 8}
SEED = 21


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from lladapt.testing import stories260k_dir

    model = stories260k_dir()
    if model is None:
        pytest.skip("../shared/models/stories260k is absent")
    return Corpus(tmp_path_factory.mktemp("fuzz"), str(model))


@pytest.mark.parametrize("family", list(CASES))
def test_the_cli_meets_the_property_on_every_fuzzed_case(corpus, family, monkeypatch):
    monkeypatch.chdir(corpus.root)  # a relative path in a fuzzed file lands here, never in the checkout
    exits = collections.Counter()
    run_family(corpus, family, CASES[family], SEED, lambda outcome: exits.update([outcome.exit_code]))
    assert sum(exits.values()) >= CASES[family]
    assert set(exits) <= {0, 1, 2}
    if family in ("config", "sweep", "dataset", "adapter", "predictions"):
        assert exits[1] + exits[2] > 0  # the generators do produce broken inputs
