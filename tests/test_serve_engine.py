"""The serving engine without HTTP: continuous batching gives every row the tokens it gets alone
(rows joining a running batch, rows leaving it, rows cancelled); adapters of every kind over one
base answer as each does alone, LoRA / series / parallel in shared forward passes; per-row gates;
sampling seeds; text pieces that add up to the answer."""

from __future__ import annotations

import pytest
import torch
from adapters_support import one_torch_thread, randomise  # noqa: F401
from eval_support import ADAPTERS, stories

from lladapt.adapters.model import attach_from_config, load_adapter
from lladapt.adapters.rows import RowSelection
from lladapt.evaluation.continuous import ContinuousBatcher, Row, Sampling
from lladapt.evaluation.generation import Decoding, generate_batch, stop_token_ids

PROMPTS = ["Once upon a time", "Lily had a big red ball and she", "The cat",
           "Tom and Sue went to the park to play with their dog"]
#: two LoRAs on the same modules, the bottlenecks, and prefix tuning (batched apart)
KINDS = {"lora": ADAPTERS["lora"], "lora-r2": {"name": "lora", "r": 2},
         **{kind: ADAPTERS[kind] for kind in ("series", "parallel", "prefix")}}


def _alone(model, tokenizer, prompts, tokens):
    """Each prompt generated on its own by the evaluator (batch size 1)."""
    return [generate_batch(model, tokenizer, [p], Decoding(max_new_tokens=tokens))[0].token_ids for p in prompts]


def test_rows_that_join_and_leave_a_running_batch_get_their_tokens_alone(stories260k):
    loaded = stories(stories260k)
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    stops = stop_token_ids(model, tokenizer)
    limits = [30, 9, 30, 17]  # rows leave at different steps
    expected = [ids[:n] for ids, n in zip(_alone(model, tokenizer, PROMPTS, 30), limits, strict=True)]
    batcher = ContinuousBatcher(model)
    rows = [Row(tokenizer(p)["input_ids"], n, stop_ids=stops) for p, n in zip(PROMPTS, limits, strict=True)]
    sizes = []
    batcher.submit(rows[0])
    for step in range(40):
        if step == 2:
            batcher.submit(rows[1])
        if step == 5:
            batcher.submit(rows[2])
            batcher.submit(rows[3])
        batcher.step()
        sizes.append(len(batcher.rows))
    assert [row.tokens for row in rows] == expected
    assert [row.finish_reason for row in rows] == ["length"] * 4
    assert max(sizes) == 4 and sizes[-1] == 0  # they did run together, and all left
    assert batcher._cache is None


def test_a_cancelled_row_leaves_and_the_others_are_unchanged(stories260k):
    loaded = stories(stories260k)
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    expected = _alone(model, tokenizer, PROMPTS[:2], 20)
    batcher = ContinuousBatcher(model)
    rows = [Row(tokenizer(p)["input_ids"], 20) for p in PROMPTS[:3]]
    for row in rows:
        batcher.submit(row)
    batcher.step()
    batcher.step()
    rows[2].stop("cancelled")
    while batcher.busy:
        batcher.step()
    # the first step prefills (token 1) and decodes (token 2), the second decodes token 3
    assert rows[2].finish_reason == "cancelled" and len(rows[2].tokens) == 3
    assert [row.tokens for row in rows[:2]] == expected


def test_a_seed_repeats_a_sampled_answer(stories260k):
    loaded = stories(stories260k)
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    ids = tokenizer(PROMPTS[0])["input_ids"]

    def sample(seed, greedy_neighbour=True):
        batcher = ContinuousBatcher(model)
        row = Row(ids, 24, sampling=Sampling(temperature=1.0, top_k=40, top_p=0.9, seed=seed))
        batcher.submit(row)
        if greedy_neighbour:
            batcher.submit(Row(tokenizer(PROMPTS[1])["input_ids"], 24))
        while batcher.busy:
            batcher.step()
        return row.tokens

    assert sample(1) == sample(1, greedy_neighbour=False)
    assert sample(1) != sample(2)
    greedy = _alone(model, tokenizer, PROMPTS[:1], 24)[0]
    assert sample(1) != greedy


def test_one_selection_gates_two_loras_on_the_same_modules(stories260k):
    """Two LoRAs share q and v of one base: each applies to its own rows only, and with no
    selection set every adapter applies to every row (the model used outside a server)."""
    loaded = stories(stories260k)
    model, layout = loaded.model.eval(), loaded.layout
    ids = torch.tensor([[1, 20, 30, 40], [1, 50, 60, 70]])
    with torch.no_grad():
        base = model(input_ids=ids).logits
    singles = []
    selection = RowSelection()
    for slot, seed in enumerate((1, 2)):
        alone = attach_from_config(stories(stories260k).model.eval(), layout, KINDS["lora"])
        randomise(alone, seed=seed, std=0.3)
        with torch.no_grad():
            singles.append(alone(input_ids=ids).logits)
        shared = attach_from_config(model, layout, KINDS["lora"])
        shared.load_state_dict(alone.state_dict(), strict=False)
        shared.adapter.share(selection.gate(slot))
        assert not hasattr(model.get_submodule(layout.module_path(0, "q")), "lora_A")  # moved out
    with torch.no_grad():
        selection.set(torch.tensor([0, 1]))
        mixed = model(input_ids=ids).logits
        selection.set(torch.tensor([-1, 0]))
        base_then_first = model(input_ids=ids).logits
        selection.set(None)
        both = model(input_ids=ids).logits
    torch.testing.assert_close(mixed[0], singles[0][0], rtol=0, atol=0)
    torch.testing.assert_close(mixed[1], singles[1][1], rtol=0, atol=0)
    torch.testing.assert_close(base_then_first[0], base[0], rtol=0, atol=0)
    torch.testing.assert_close(base_then_first[1], singles[0][1], rtol=0, atol=0)
    assert not torch.allclose(both[0], singles[0][0], atol=1e-4)  # both LoRAs at once


@pytest.fixture(scope="module")
def saved_adapters(tmp_path_factory):
    """One random adapter of each kind (nonzero everywhere) saved on stories260k."""
    from assets import shared_asset

    source = shared_asset("models", "stories260k", "config.json").parent
    root = tmp_path_factory.mktemp("adapters")
    for seed, (name, config) in enumerate(KINDS.items()):
        loaded = stories(source)
        adapted = attach_from_config(loaded.model, loaded.layout, config)
        randomise(adapted, seed=seed, std=0.3)
        adapted.save_adapter(root / name)
    return source, root


def test_every_kind_over_one_base_answers_as_it_does_alone(saved_adapters):
    from lladapt.config import ModelSection
    from lladapt.serving.lanes import Job
    from lladapt.serving.models import load_served
    from lladapt.serving.spec import ServedAdapter, ServeSpec

    source, root = saved_adapters
    spec = ServeSpec(ModelSection(source=str(source)), "alpaca",
                     {name: ServedAdapter(root / name, "alpaca") for name in KINDS})
    served = load_served(spec)
    slots_seen = []
    selection = served.lanes[0].selection
    served.lanes[0].batcher.select_rows = lambda slots: (slots_seen.append(set(slots.tolist())),
                                                         selection.set(slots))
    tokenizer = served.tokenizer
    rows = {}
    for name in ["base", *KINDS]:
        for prompt in PROMPTS:
            model = served.models[name]
            row = rows[name, prompt] = Row(tokenizer(prompt)["input_ids"], 16, stop_ids=served.stop_ids,
                                           slot=model.slot)
            model.lane.submit(Job(row))
    for row in rows.values():
        assert row.done.wait(60)
    served.close()
    assert {name: m.shares_base for name, m in served.models.items()} == {
        "base": True, "lora": True, "lora-r2": True, "series": True, "parallel": True, "prefix": False}
    assert max(len(s) for s in slots_seen) >= 3  # rows of different adapters in one forward
    for name in ["base", *KINDS]:
        loaded = stories(source)
        model = loaded.model.eval() if name == "base" else load_adapter(loaded.model, loaded.layout, root / name).eval()
        assert [rows[name, p].tokens for p in PROMPTS] == _alone(model, loaded.tokenizer, PROMPTS, 16), name
    answers = {name: tuple(tuple(rows[name, p].tokens) for p in PROMPTS) for name in ["base", *KINDS]}
    assert len(set(answers.values())) == 6  # every adapter changed the answers


def test_text_pieces_add_up_to_the_answer_and_stop_at_a_stop_string(stories260k):
    from lladapt.serving.text import TextDeltas

    tokenizer = stories(stories260k).tokenizer
    ids = tokenizer("Once upon a time, there was a little girl named Lily. She loved to play.",
                    add_special_tokens=False)["input_ids"]
    pieces = []
    deltas = TextDeltas(tokenizer, on_text=pieces.append)
    for token in ids:
        deltas.put(torch.tensor([token]))
    deltas.end()
    assert "".join(pieces) == deltas.text == tokenizer.decode(ids, skip_special_tokens=True)
    assert len(pieces) > 5

    row = Row([1], 100)
    pieces = []
    deltas = TextDeltas(tokenizer, stops=["little girl"], on_text=pieces.append)
    deltas.row = row
    for token in ids:
        deltas.put(torch.tensor([token]))
        if row.asked_to_stop:
            break
    deltas.end()
    assert deltas.text == "Once upon a time, there was a " and "".join(pieces) == deltas.text
    assert row.asked == "stop"
