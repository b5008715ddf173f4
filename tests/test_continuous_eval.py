"""The evaluator's continuous path (:mod:`lladapt.evaluation.streaming`): every item through one
continuous batcher, a finished row's slot refilled by the next prompt. Its answers and token counts
equal the batched path's item for item (base model, merged LoRA, an unmerged series adapter),
with stop strings too; it runs fewer decode passes than length-sorted batches; predictions
appended as rows finish survive an interruption; which path an entry takes."""

from __future__ import annotations

import pytest
import torch
from adapters_support import one_torch_thread, randomise  # noqa: F401
from eval_support import ADAPTERS, EXAMPLES, answers, run_entry, stories, stories_tokenizer

from lladapt.adapters.model import attach_from_config
from lladapt.evaluation.generation import Decoding, encode_left_padded, generation_path
from lladapt.evaluation.store import PredictionStore
from lladapt.evaluation.streaming import SharedStream, StopStrings

#: item 1 answers in 34 tokens, these in 12 or 13 (stories260k, "." as a stop token, 40 at most).
LONG, SHORT = 1, [0, 4, 5, 7, 9]


def _sentences(loaded):
    """stories260k that stops at the end of a sentence: rows finish at different steps."""
    tokenizer = loaded.tokenizer
    loaded.model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(".")]
    return loaded


def _model(loaded, kind):
    if kind == "base":
        return loaded.model
    model = attach_from_config(loaded.model, loaded.layout, ADAPTERS[kind])
    randomise(model, std=0.05)  # LoRA's B is not zero: the adapter changes the logits
    return model


@pytest.mark.parametrize("kind", ["base", "lora", "series"])
def test_continuous_answers_equal_the_batched_paths_item_for_item(kind, stories260k):
    loaded = _sentences(stories(stories260k))
    model = _model(loaded, kind)
    batched = run_entry(model, loaded.tokenizer, batch_size=3, max_new_tokens=40, continuous=False)
    continuous = run_entry(model, loaded.tokenizer, batch_size=3, max_new_tokens=40)
    assert (batched.generation_path, continuous.generation_path) == ("compacting", "continuous")
    assert answers(continuous) == answers(batched)
    counts = [p.generated_tokens for p in continuous.predictions]
    assert len(set(counts)) >= 3 and min(counts) < 40  # rows ended at different steps
    if kind == "lora":
        plain = _sentences(stories(stories260k)).model
        base = run_entry(plain, loaded.tokenizer, batch_size=3, max_new_tokens=40)
        assert answers(base) != answers(continuous)  # the adapter was in the forward


def _decode_passes(model):
    """Counts the rows of every one-token forward (a decode step) of ``model``."""
    passes = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[1] == 1:
            passes.append(ids.shape[0])

    return passes, model.register_forward_pre_hook(hook, with_kwargs=True)


def test_a_finished_rows_slot_is_refilled(stories260k):
    loaded = _sentences(stories(stories260k))
    examples = [EXAMPLES[i] for i in [LONG, *SHORT]]
    passes, handle = _decode_passes(loaded.model)
    try:
        batched = run_entry(loaded.model, loaded.tokenizer, batch_size=2, max_new_tokens=40, examples=examples,
                            continuous=False)
        batched_passes, passes[:] = list(passes), []
        continuous = run_entry(loaded.model, loaded.tokenizer, batch_size=2, max_new_tokens=40, examples=examples)
    finally:
        handle.remove()
    counts = [p.generated_tokens for p in continuous.predictions]
    assert answers(continuous) == answers(batched)
    assert counts[0] > 2 * max(counts[1:])  # one long answer, several short ones
    assert max(passes) == 2  # never more rows than the batch size
    # the same row-steps (each row's tokens after its first) in fewer passes: a batch of 2 runs
    # until its slowest row ends, the long row alone once its partner finished. Refilled, the
    # short rows go through the other slot while the long one runs.
    assert sum(passes) == sum(batched_passes) == sum(counts) - len(counts)
    assert len(passes) < len(batched_passes)
    assert len(passes) <= (sum(counts) + 1) // 2 + max(counts[1:])


def test_stop_strings_stop_rows_with_the_batched_paths_text(stories260k):
    loaded = stories(stories260k)
    free = run_entry(loaded.model, loaded.tokenizer, batch_size=3, max_new_tokens=30)
    word = free.predictions[1].response.split()[3]
    batched = run_entry(loaded.model, loaded.tokenizer, batch_size=3, max_new_tokens=30, stop=[word],
                        continuous=False)
    continuous = run_entry(loaded.model, loaded.tokenizer, batch_size=3, max_new_tokens=30, stop=[word])
    assert (batched.generation_path, continuous.generation_path) == ("generate", "continuous")
    assert answers(continuous) == answers(batched)
    assert continuous.predictions[1].response == free.predictions[1].response.split(word)[0].strip()
    assert continuous.predictions[1].generated_tokens < free.predictions[1].generated_tokens


def test_a_row_stops_where_transformers_stop_strings_would_stop_it(stories260k):
    """At every token, :class:`StopStrings` agrees with ``generate``'s ``StopStringCriteria``,
    stop strings that begin in the prompt included (the prompt ends with a newline)."""
    from transformers.generation.stopping_criteria import StopStringCriteria

    from lladapt.evaluation.continuous import Row

    tokenizer = stories_tokenizer(stories260k)
    prompt = tokenizer("### Response:\n")["input_ids"]
    newline = tokenizer.convert_tokens_to_ids("<0x0A>")
    words = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in ["The dog ran. Lily saw the cat.", "Once upon"]]
    answer = [newline, *words[0], newline, newline, *words[1]]
    seen = []
    for stop in ["\n\n", ":\n\n", "Response", "Lily", " the", ".", "Once upon"]:
        criteria = StopStringCriteria(tokenizer, [stop])
        watch = StopStrings(tokenizer, [stop], prompt)
        watch.row = row = Row(prompt, 100)
        for k, token in enumerate(answer):
            row.asked = None
            watch.put(torch.tensor([token]))
            expected = bool(criteria(torch.tensor([prompt + answer[: k + 1]]), None)[0])
            assert (row.asked == "stop") == expected, (stop, k)
            if expected:
                seen.append((stop, k))
    assert {stop for stop, _ in seen} == {"\n\n", ":\n\n", "Lily", " the", ".", "Once upon"}
    assert ("\n\n", 0) in seen and (":\n\n", 0) in seen  # begun in the prompt, ended by the first token


def test_each_rows_prompt_ids_are_its_row_of_the_left_padded_batch(stories260k):
    from lladapt.data.loading import get_template

    tokenizer = stories_tokenizer(stories260k)
    prompts = [get_template("alpaca").eval_prompt(ex) for ex in EXAMPLES]
    enc = encode_left_padded(tokenizer, prompts, "cpu")
    for prompt, ids, mask in zip(prompts, enc["input_ids"], enc["attention_mask"], strict=True):
        assert ids[mask.bool()].tolist() == tokenizer(prompt)["input_ids"]
        assert tokenizer(prompt)["input_ids"][0] == tokenizer.bos_token_id


def test_an_interrupted_continuous_run_keeps_what_it_appended(stories260k, tmp_path, monkeypatch):
    loaded = _sentences(stories(stories260k))
    whole = run_entry(loaded.model, loaded.tokenizer, batch_size=3, max_new_tokens=40)
    real, real_add = SharedStream.finished, SharedStream.add

    def interrupted(self, key):
        for n, finished in enumerate(real(self, key)):
            if n == 3:
                raise KeyboardInterrupt
            yield finished

    monkeypatch.setattr(SharedStream, "finished", interrupted)
    path = tmp_path / "t-test.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_entry(loaded.model, loaded.tokenizer, batch_size=3, max_new_tokens=40,
                  store=PredictionStore(path, {"s": 1}))
    kept = PredictionStore(path, {"s": 1}).load(_prompts())
    assert 3 <= len(kept) < len(EXAMPLES)
    assert all(r["seconds"] > 0 for r in kept.values())

    computed = []
    monkeypatch.setattr(SharedStream, "finished", real)
    monkeypatch.setattr(SharedStream, "add", lambda self, key, prompts, *args: computed.extend(prompts) or real_add(self, key, prompts, *args))
    resumed = run_entry(loaded.model, loaded.tokenizer, batch_size=3, max_new_tokens=40,
                        store=PredictionStore(path, {"s": 1}))
    assert sorted(i for i, _ in computed) == sorted(set(range(len(EXAMPLES))) - set(kept))
    assert resumed.computed == len(EXAMPLES) - len(kept)
    assert answers(resumed) == answers(whole)
    assert sorted(PredictionStore(path, {"s": 1}).load(_prompts())) == list(range(len(EXAMPLES)))


def _prompts():
    from lladapt.data.loading import get_template

    return [get_template("alpaca").eval_prompt(ex) for ex in EXAMPLES]


def test_which_path_an_entry_takes(stories260k, monkeypatch):
    from adapters_support import layout_of
    from eval_support import tiny_llama

    from lladapt.common import processes as procs

    model = stories(stories260k).model
    assert generation_path(model, Decoding(max_new_tokens=8)) == "continuous"
    assert generation_path(model, Decoding(max_new_tokens=8, stop=("x",))) == "continuous"
    assert generation_path(model, Decoding(max_new_tokens=8, continuous=False)) == "compacting"
    assert generation_path(model, Decoding(max_new_tokens=8, continuous=False, stop=("x",))) == "generate"
    assert generation_path(model, Decoding(max_new_tokens=8, num_beams=2)) == "generate"
    assert generation_path(model, Decoding(max_new_tokens=8, compact=False)) == "generate"
    assert generation_path(model, Decoding.paper(8)) == "generate"
    base = tiny_llama()
    prefix = attach_from_config(base, layout_of(base), ADAPTERS["prefix"])
    assert generation_path(prefix, Decoding(max_new_tokens=8)) == "generate"
    monkeypatch.setattr(procs.Processes, "world", property(lambda self: 2))
    assert generation_path(model, Decoding(max_new_tokens=8)) == "compacting"
    assert "continuous" not in Decoding(max_new_tokens=8).answer_settings()
