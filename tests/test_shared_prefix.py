"""The opening every prompt of an entry shares (the template's "Below is an instruction...") is
prefilled once: the continuous batcher starts each row that begins with it from its keys and
values and prefills only the rest of the prompt. The rows get the tokens, and the logits within
float tolerance, that a full prefill gives; rows that do not begin with it are prefilled whole;
the evaluator takes the prefix over all of an entry's items."""

from __future__ import annotations

import torch
from adapters_support import one_torch_thread  # noqa: F401
from eval_support import EXAMPLES, answers, run_entry, stories

from lladapt.data.loading import get_template
from lladapt.evaluation.continuous import ContinuousBatcher, Row
from lladapt.evaluation.streaming import MIN_PREFIX, shared_prefix


def test_the_shared_prefix_is_what_every_prompt_starts_with_and_leaves_each_a_token():
    opening = list(range(100, 100 + MIN_PREFIX))
    assert shared_prefix([opening + [1, 2], opening + [1, 3], opening + [4]]) == tuple(opening)
    assert shared_prefix([opening + [1, 2], opening + [1, 2, 3]]) == (*opening, 1)  # one token left to each
    assert shared_prefix([opening + [1], opening[:-1] + [9, 1]]) == ()  # below MIN_PREFIX
    assert shared_prefix([opening + [1]]) == ()  # one prompt shares with nobody
    assert shared_prefix([]) == ()


def _prompt_ids(loaded, examples=EXAMPLES):
    template = get_template("alpaca")
    return loaded.tokenizer([template.eval_prompt(ex) for ex in examples])["input_ids"]


def _run(model, prompts, prefix=(), max_rows=3, tokens=12, own=None):
    """Every prompt through one batcher, each row with ``prefix`` (row ``i`` with ``own[i]`` when
    given); each row's tokens, and the width of every forward."""
    widths = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    batcher = ContinuousBatcher(model, max_rows=max_rows)
    rows = [Row(ids, tokens, prefix_ids=prefix if own is None else own[i]) for i, ids in enumerate(prompts)]
    try:
        for row in rows:
            batcher.submit(row)
        while batcher.busy:
            batcher.step()
    finally:
        handle.remove()
    return [row.tokens for row in rows], widths


def test_rows_starting_from_the_prefilled_prefix_get_a_full_prefills_tokens(stories260k):
    model = stories(stories260k).model.eval()
    prompts = _prompt_ids(stories(stories260k))
    prefix = shared_prefix(prompts)
    assert len(prefix) >= 20  # the template's opening
    prompts[2] = prompts[2][1:]  # a prompt that does not start with it
    full, full_widths = _run(model, prompts)
    shared, widths = _run(model, prompts, prefix)
    assert shared == full
    # the first admission (prompts 0 to 2): the prefix alone, once; the rest of prompts 0 and 1;
    # prompt 2, which does not start with it, whole
    assert widths[:3] == [len(prefix), max(len(prompts[0]), len(prompts[1])) - len(prefix), len(prompts[2])]
    assert widths.count(len(prefix)) == 1
    assert all(w <= max(map(len, prompts)) - len(prefix) for w in widths[3:])  # later: the rest only
    assert max(full_widths[1:]) > max(widths[3:])  # a full prefill after the first: wider


def test_rows_with_prefixes_of_their_own_share_one_batcher(stories260k):
    """Rows of two entries, each with its own prefix: each prefix is prefilled once, and every
    row gets a full prefill's tokens."""
    model = stories(stories260k).model.eval()
    prompts = _prompt_ids(stories(stories260k))
    full, _ = _run(model, prompts)
    prefix = shared_prefix(prompts)
    own = [prefix[:-5] if i % 2 else prefix for i in range(len(prompts))]  # odd rows: a shorter one
    tokens, widths = _run(model, prompts, own=own)
    assert tokens == full
    assert (widths.count(len(prefix)), widths.count(len(prefix) - 5)) == (1, 1)
    # the first admission: the longer prefix, rows 0 and 2 after it, the shorter one, row 1 after it
    assert widths[:4] == [len(prefix), max(len(prompts[0]), len(prompts[2])) - len(prefix),
                          len(prefix) - 5, len(prompts[1]) - len(prefix) + 5]


def test_the_first_tokens_logits_are_a_full_prefills(stories260k):
    """The logits of the prompt's last position, with the prefix's keys reused, against a full
    prefill of the same prompts (the batcher's first forward of each)."""
    model = stories(stories260k).model.eval()
    prompts = _prompt_ids(stories(stories260k))[:4]
    prefix = shared_prefix(prompts)
    logits, seen = {}, []
    handle = model.register_forward_hook(lambda m, a, out: seen.append(out.logits[:, -1].clone()))
    try:
        for name, cut in (("full", ()), ("shared", prefix)):
            batcher = ContinuousBatcher(model, max_rows=4)
            for ids in prompts:
                batcher.submit(Row(ids, 1, prefix_ids=cut))
            batcher.step()
            logits[name] = seen[-1]
    finally:
        handle.remove()
    assert logits["shared"].shape == (4, model.config.vocab_size)
    torch.testing.assert_close(logits["shared"], logits["full"], rtol=0, atol=1e-5)


def test_a_shared_prefix_and_per_row_adapters_do_not_mix(stories260k):
    """A prefix's keys are computed once, by one model: a batcher that selects an adapter per row
    ends a row with a prefix in error, and goes on with the others."""
    model = stories(stories260k).model.eval()
    batcher = ContinuousBatcher(model, select_rows=lambda slots: None)
    shared, plain = Row([1, 2, 3, 4, 5], 2, prefix_ids=(1, 2, 3)), Row([1, 2, 3, 4, 5], 2)
    batcher.submit(shared)
    batcher.step()
    assert shared.finish_reason == "error" and isinstance(shared.error, ValueError)
    assert "no per-row adapters" in str(shared.error)
    batcher.submit(plain)
    while batcher.busy:
        batcher.step()
    assert plain.finish_reason == "length" and len(plain.tokens) == 2


def test_the_evaluator_prefills_the_entrys_prefix_once(stories260k, monkeypatch):
    """Through ``evaluate_entry``: the prefix of all the entry's prompts is prefilled once and the
    answers are those of a run that shares none."""
    from lladapt.evaluation import streaming

    loaded = stories(stories260k)
    prefix = shared_prefix(_prompt_ids(loaded))
    widths = []
    handle = loaded.model.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        shared = run_entry(loaded.model, loaded.tokenizer, batch_size=3)
        assert widths.count(len(prefix)) == 1
        monkeypatch.setattr(streaming, "MIN_PREFIX", 10_000)  # nothing is long enough to share
        monkeypatch.setattr(streaming.shared_prefix, "__defaults__", (10_000,))
        widths.clear()
        whole = run_entry(loaded.model, loaded.tokenizer, batch_size=3)
        assert len(prefix) not in widths
    finally:
        handle.remove()
    assert answers(shared) == answers(whole)
