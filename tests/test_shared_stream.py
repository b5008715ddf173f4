"""Several evaluation entries through one continuous batcher (:func:`evaluate_entries`,
:class:`lladapt.evaluation.streaming.SharedStream`): the slots an entry's last rows free take the
next entry's first prompts. Each entry's answers are those it gets alone, in fewer decode passes;
every predictions file is read before any item is computed."""

from __future__ import annotations

import pytest
from adapters_support import one_torch_thread  # noqa: F401
from eval_support import EXAMPLES, answers, stories

from lladapt.common.errors import LladaptError
from lladapt.components.plugin_manager import get_registry
from lladapt.data.loading import get_template, make_parser
from lladapt.evaluation.generation import Decoding
from lladapt.evaluation.runner import Entry, Evaluation, evaluate_entries, evaluate_entry, prepared
from lladapt.evaluation.store import PredictionStore


def _setup(stories260k):
    """stories260k stopping at a sentence's end (rows end at different steps), two entries."""
    loaded = stories(stories260k)
    tokenizer = loaded.tokenizer
    loaded.model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(".")]
    dataset = get_registry("dataset").get("arith")()
    entries = [Entry(label, "t", "test", dataset, examples, make_parser(dataset))
               for label, examples in (("a-test", EXAMPLES[:6]), ("b-test", EXAMPLES[6:]))]
    return loaded, entries


def _passes(model, run):
    """``run()`` and the number of rows in each of its decode passes (one-token forwards)."""
    rows = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(kwargs["input_ids"].shape[0])
        if kwargs["input_ids"].shape[1] == 1 else None, with_kwargs=True)
    try:
        return run(), rows
    finally:
        handle.remove()


def test_entries_share_one_batcher_and_answer_as_each_alone(stories260k):
    loaded, entries = _setup(stories260k)
    model, template = loaded.model, get_template("alpaca")
    evaluation = Evaluation(Decoding(max_new_tokens=40, batch_size=3))
    with prepared(model, merge=False):
        alone, alone_rows = _passes(model, lambda: [
            evaluate_entry(model, loaded.tokenizer, template, entry, evaluation) for entry in entries])
        shared, shared_rows = _passes(model, lambda: list(evaluate_entries(
            model, loaded.tokenizer, template, [(entry, evaluation, None) for entry in entries])))
    assert [s.generation_path for s in shared] == ["continuous", "continuous"]
    assert [answers(s) for s in shared] == [answers(s) for s in alone]
    assert [s.label for s in shared] == ["a-test", "b-test"]
    # the same row-steps, in fewer passes: entry a's tail ran beside entry b's first rows
    assert sum(shared_rows) == sum(alone_rows)
    assert len(shared_rows) < len(alone_rows)


def test_every_predictions_file_is_read_before_anything_is_computed(stories260k, tmp_path):
    loaded, entries = _setup(stories260k)
    evaluation = Evaluation(Decoding(max_new_tokens=8, batch_size=3))
    stores = [PredictionStore(tmp_path / f"{entry.label}.jsonl", {"s": 1}) for entry in entries]
    (tmp_path / "b-test.settings.json").write_text('{"s": 2}')
    (tmp_path / "b-test.jsonl").write_text("")
    jobs = [(entry, evaluation, store) for entry, store in zip(entries, stores, strict=True)]
    with pytest.raises(LladaptError, match="b-test.jsonl holds predictions made with other settings"):
        list(evaluate_entries(loaded.model, loaded.tokenizer, get_template("alpaca"), jobs))
    assert not (tmp_path / "a-test.jsonl").exists()  # entry a computed nothing
