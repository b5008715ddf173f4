"""Generation: batch-size invariance for every adapter kind, identity with plain batched
``generate``, the model's own stop tokens, token counting, stop strings, eval mode."""

from __future__ import annotations

import pytest
import torch
from adapters_support import one_torch_thread, randomise  # noqa: F401
from eval_support import (
    ADAPTERS,
    EXAMPLES,
    answers,
    run_entry,
    stories,
    stories_tokenizer,
    tiny_llama,
)

from lladapt.adapters.model import attach_from_config
from lladapt.evaluation.generation import Decoding, finish, generation_config


def _adapted(model, layout, adapter):
    adapted = attach_from_config(model, layout, adapter)
    randomise(adapted, std=0.3)
    return adapted


def test_stories260k_with_lora_batch_size_1_equals_8(stories260k):
    loaded = stories(stories260k)
    model = _adapted(loaded.model, loaded.layout, ADAPTERS["lora"])
    one = run_entry(model, loaded.tokenizer, batch_size=1, max_new_tokens=24)
    eight = run_entry(model, loaded.tokenizer, batch_size=8, max_new_tokens=24)
    assert answers(one) == answers(eight)
    assert sum(p.generated_tokens for p in one.predictions) > 0
    assert len({p.response for p in one.predictions}) > 3  # real, different generations


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
def test_tiny_model_batch_size_1_equals_8(kind, stories260k):
    from adapters_support import layout_of

    tokenizer = stories_tokenizer(stories260k)
    base = tiny_llama()
    model = _adapted(base, layout_of(base), ADAPTERS[kind])
    one = run_entry(model, tokenizer, batch_size=1)
    eight = run_entry(model, tokenizer, batch_size=8)
    assert answers(one) == answers(eight)
    assert all(p.generated_tokens > 0 for p in one.predictions)


def _plain_generate(model, tokenizer, prompts, batch_size, max_new_tokens):
    """Plain transformers batched generation, in file order, as users write it."""
    tokenizer.padding_side = "left"
    out = []
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        out += ids[:, enc["input_ids"].shape[1] :].tolist()
    return out


@pytest.mark.parametrize("adapter", [None, "lora"])
def test_greedy_answers_equal_plain_batched_generate(adapter, stories260k):
    from lladapt.data.loading import get_template

    loaded = stories(stories260k)
    model = loaded.model if adapter is None else _adapted(loaded.model, loaded.layout, ADAPTERS[adapter])
    ours = run_entry(model, loaded.tokenizer, batch_size=4, max_new_tokens=20)
    template = get_template("alpaca")
    prompts = [template.eval_prompt(ex) for ex in EXAMPLES]
    plain = _plain_generate(model, loaded.tokenizer, prompts, 4, 20)
    expected = [template.extract_response(p + loaded.tokenizer.decode(
        finish(loaded.tokenizer, row, [2], ()).token_ids, skip_special_tokens=True)) for p, row in zip(prompts, plain, strict=True)]
    assert [p.response for p in ours.predictions] == expected


def test_the_models_own_stop_tokens_end_generation(stories260k):
    loaded = stories(stories260k)
    free = run_entry(loaded.model, loaded.tokenizer, batch_size=4, max_new_tokens=16, examples=EXAMPLES[:2])
    assert all(p.generated_tokens == 16 for p in free.predictions)
    # make the 4th generated token of item 0 a stop token of the model (not the tokenizer's EOS)
    tokenizer = loaded.tokenizer
    from lladapt.data.loading import get_template

    prompt = get_template("alpaca").eval_prompt(EXAMPLES[0])
    enc = tokenizer([prompt], return_tensors="pt")
    row = loaded.model.generate(**enc, max_new_tokens=4, do_sample=False)[0, -4:].tolist()
    assert row[3] not in row[:3]
    loaded.model.generation_config.eos_token_id = [tokenizer.eos_token_id, row[3]]
    config = generation_config(loaded.model, tokenizer, Decoding(max_new_tokens=16))
    assert config.eos_token_id == [tokenizer.eos_token_id, row[3]]
    stopped = run_entry(loaded.model, tokenizer, batch_size=4, max_new_tokens=16, examples=EXAMPLES[:1])
    assert stopped.predictions[0].generated_tokens == 4


@pytest.mark.parametrize("pad", [0, 2, 99])
def test_generated_tokens_are_counted_the_same_whatever_the_pad_token(pad, stories260k):
    tokenizer = stories_tokenizer(stories260k)
    # a row that stopped at EOS (2) after 3 tokens, then padding; and a row that ran to the limit.
    stopped = finish(tokenizer, [40, 41, 2, pad, pad, pad], [2], ())
    full = finish(tokenizer, [40, 41, 42, 43, 44, 45], [2], ())
    assert (stopped.tokens, full.tokens) == (3, 6)
    assert stopped.text == tokenizer.decode([40, 41])


def test_stop_strings_cut_the_response_and_the_count(stories260k):
    tokenizer = stories_tokenizer(stories260k)
    ids = tokenizer("The dog ran. Lily saw the cat.", add_special_tokens=False)["input_ids"]
    cut = finish(tokenizer, ids, [2], ("Lily",))
    assert cut.text.strip() == "The dog ran."
    assert tokenizer.decode(ids[: cut.tokens]).endswith("Lily")
    assert "Lily" not in tokenizer.decode(ids[: cut.tokens - 1])


def test_stop_strings_end_generation_early(stories260k):
    loaded = stories(stories260k)
    free = run_entry(loaded.model, loaded.tokenizer, batch_size=4, max_new_tokens=30)
    word = free.predictions[1].response.split()[3]
    stopped = run_entry(loaded.model, loaded.tokenizer, batch_size=4, max_new_tokens=30, stop=[word])
    for a, b in zip(free.predictions, stopped.predictions, strict=True):
        assert b.response == a.response.split(word)[0].strip()
        assert b.generated_tokens <= a.generated_tokens
    assert stopped.predictions[1].generated_tokens < free.predictions[1].generated_tokens


def test_evaluation_runs_in_eval_mode_and_restores_training_mode(stories260k):
    loaded = stories(stories260k)
    model = _adapted(loaded.model, loaded.layout, {"name": "lora", "r": 4, "dropout": 0.5})
    model.train()
    first = run_entry(model, loaded.tokenizer, batch_size=4, merge=False)
    second = run_entry(model, loaded.tokenizer, batch_size=4, merge=False)
    assert answers(first) == answers(second)  # dropout was off
    assert model.training and not model.merged


def test_the_paper_protocol_is_one_item_at_a_time_beam_4_without_cache(stories260k, tmp_path):
    from lladapt.api import evaluate
    from lladapt.config import load_config
    from lladapt.data.loading import get_template
    from lladapt.evaluation.suite import evaluation_for

    config = load_config({"model": str(stories260k), "output_dir": str(tmp_path),
                          "eval": {"datasets": [{"name": "arith", "test_size": 3}], "protocol": "paper",
                                   "max_new_tokens": 10, "batch_size": 8}})
    decoding = evaluation_for(config, 256).decoding
    assert (decoding.batch_size, decoding.num_beams, decoding.use_cache, decoding.sort_by_length) == (1, 4, False, False)
    results = evaluate(config, echo=lambda _: None)
    assert results["eval"][0]["protocol"] == "paper"
    loaded = stories(stories260k)
    template = get_template("alpaca")
    from lladapt.data.loading import eval_sets

    expected = []
    for ex in eval_sets(config)[0].examples:
        prompt = template.eval_prompt(ex)
        enc = loaded.tokenizer(prompt, return_tensors="pt")
        out = loaded.model.generate(**enc, num_beams=4, use_cache=False, do_sample=False, max_new_tokens=10)
        ids = finish(loaded.tokenizer, out[0, enc["input_ids"].shape[1]:].tolist(), [2], ()).token_ids
        expected.append(template.extract_response(prompt + loaded.tokenizer.decode(ids, skip_special_tokens=True)))
    import json

    lines = [json.loads(line) for line in (tmp_path / "eval" / "arith-test.jsonl").read_text().splitlines()]
    assert [r["index"] for r in lines] == [0, 1, 2]  # file order, one at a time
    assert [r["response"] for r in lines] == expected


def test_rows_that_finish_early_leave_the_batch_with_plain_generates_answers(stories260k, monkeypatch):
    from lladapt.data.loading import get_template
    from lladapt.evaluation import decode

    loaded = stories(stories260k)
    tokenizer = loaded.tokenizer
    model = attach_from_config(loaded.model, loaded.layout, ADAPTERS["lora"])
    randomise(model, std=0.05)  # changes the answers a little, keeps them stories
    period = tokenizer.convert_tokens_to_ids(".")
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, period]  # stop at a sentence's end
    calls = []
    real = decode.greedy_compacting
    monkeypatch.setattr(decode, "greedy_compacting", lambda *a, **k: calls.append(1) or real(*a, **k))
    ours = run_entry(model, tokenizer, batch_size=8, max_new_tokens=40, merge=False, continuous=False)
    assert ours.generation_path == "compacting"
    counts = [p.generated_tokens for p in ours.predictions]
    assert calls and len(set(counts)) >= 3 and min(counts) < 40  # rows finished at different steps
    template = get_template("alpaca")
    prompts = [template.eval_prompt(ex) for ex in EXAMPLES]
    plain = _plain_generate(model, tokenizer, prompts, 8, 40)
    expected = [finish(tokenizer, row, [tokenizer.eos_token_id, period], ()) for row in plain]
    assert counts == [e.tokens for e in expected]
    assert [p.response for p in ours.predictions] == [
        template.extract_response(p + e.text) for p, e in zip(prompts, expected, strict=True)]


def test_prompt_learning_adapters_and_beam_search_go_through_generate(stories260k, monkeypatch):
    from adapters_support import layout_of

    from lladapt.evaluation import decode

    monkeypatch.setattr(decode, "greedy_compacting", lambda *a, **k: pytest.fail("compacted"))
    tokenizer = stories_tokenizer(stories260k)
    base = tiny_llama()
    model = _adapted(base, layout_of(base), ADAPTERS["prefix"])
    assert run_entry(model, tokenizer, batch_size=4, max_new_tokens=3).total == len(EXAMPLES)
    assert not decode.can_compact(stories(stories260k).model, generation_config(
        stories(stories260k).model, tokenizer, Decoding(max_new_tokens=3, num_beams=2)))
