"""Log-likelihood scoring picks the answer a direct per-choice loss computation picks."""

from __future__ import annotations

import pytest
import torch
from adapters_support import one_torch_thread  # noqa: F401
from eval_support import stories

from lladapt.common.errors import ConfigError
from lladapt.components.interfaces import Dataset, Example
from lladapt.data.loading import get_template, make_parser
from lladapt.evaluation.generation import Decoding
from lladapt.evaluation.runner import Entry, Evaluation, evaluate_entry, prepared

STORY_CHOICES = {
    "a": "Lily went to the park.",
    "b": "the dog was very happy and ran to the big red ball in the garden",
    "c": "zq xv kk",
    "d": "Once upon a time, there was a little girl.",
}


class Stories(Dataset):
    """Per-item choice texts of different lengths (so that normalising can change the pick)."""

    name = "stories-mc"
    parser = "choice"
    parser_options = {"choices": list(STORY_CHOICES)}

    def choices(self, example):
        keys = example.meta["keys"]
        return {k: STORY_CHOICES[k] for k in keys}


EXAMPLES = [
    Example(instruction=q, answer=a, source=f"s#{i}", meta={"keys": keys})
    for i, (q, a, keys) in enumerate([
        ("Tell me a story.", "d", "abcd"),
        ("Where did Lily go?", "a", "ac"),
        ("What did the dog do?", "b", "bd"),
        ("Say something.", "a", "abc"),
        ("Once upon a time", "d", "dcb"),
        ("What is the dog like?", "b", "ab"),
        ("Lily and Ben", "a", "cbda"),
    ])
]


def direct_pick(model, tokenizer, prompt, choices, normalize):
    """The choice with the lowest summed (or mean) loss of its tokens after the prompt."""
    best, best_value = None, None
    for key, text in choices.items():
        context = tokenizer(prompt)["input_ids"]
        cont = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([context + cont])
        labels = torch.tensor([[-100] * len(context) + cont])
        with torch.no_grad():
            mean_loss = model(input_ids=ids, labels=labels).loss.item()
        value = -mean_loss if normalize else -mean_loss * len(cont)
        if best_value is None or value > best_value:
            best, best_value = key, value
    return best


def _picks(normalize, stories260k):
    loaded = stories(stories260k)
    template = get_template("alpaca")
    dataset = Stories()
    entry = Entry("mc-test", "mc", "test", dataset, EXAMPLES, make_parser(dataset))
    evaluation = Evaluation(Decoding(max_new_tokens=1, batch_size=3), scoring="loglik",
                            length_normalize=normalize)
    with prepared(loaded.model, merge=False):
        scored = evaluate_entry(loaded.model, loaded.tokenizer, template, entry, evaluation)
    expected = [direct_pick(loaded.model, loaded.tokenizer, template.eval_prompt(ex),
                            dataset.choices(ex), normalize) for ex in EXAMPLES]
    assert [p.prediction for p in scored.predictions] == expected
    assert scored.correct == sum(e == ex.answer for e, ex in zip(expected, EXAMPLES, strict=True))
    assert scored.unparsed == 0
    return expected


@pytest.mark.parametrize("normalize", [False, True])
def test_loglik_picks_what_a_direct_per_choice_loss_picks(normalize, stories260k):
    _picks(normalize, stories260k)


def test_normalising_changes_some_picks(stories260k):
    plain = _picks(False, stories260k)
    normalised = _picks(True, stories260k)
    assert plain != normalised  # the data above makes the two rules disagree somewhere


def test_paper_datasets_supply_their_answer_words_as_choices(paper_data):
    from lladapt.data.loading import build_dataset

    piqa = build_dataset("piqa", data_dir=paper_data)
    assert piqa.choices(Example(instruction="x")) == {
        "solution1": "the correct answer is solution1", "solution2": "the correct answer is solution2",
    }
    assert build_dataset("gsm8k", data_dir=paper_data).choices(Example(instruction="x")) is None


def test_loglik_on_a_dataset_without_choices_is_a_config_error(stories260k, tmp_path):
    from lladapt.api import evaluate

    config = {"model": str(stories260k), "eval": {"datasets": [{"name": "arith", "test_size": 2}],
                                                  "scoring": "loglik"}}
    with pytest.raises(ConfigError, match="dataset 'arith' supplies no answer choices"):
        evaluate(config | {"output_dir": str(tmp_path / "out")}, echo=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_shared_contexts_give_the_whole_pair_scores_with_each_prompt_computed_once(stories260k):
    from lladapt.evaluation import loglik

    loaded = stories(stories260k)
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    template = get_template("alpaca")
    pairs = [(template.eval_prompt(ex), STORY_CHOICES[k]) for ex in EXAMPLES for k in ex.meta["keys"]]
    pairs.append((template.eval_prompt(EXAMPLES[0]), "x"))  # a one-token continuation
    # choices that share their first tokens (one of them all of another's but the last)
    extra = Example(instruction="Which answer?", answer="answer1", source="x#0")
    pairs += [(template.eval_prompt(extra), text) for text in
              ("the correct answer is answer1", "the correct answer is answer2", "the correct answer",
               "the correct answer is answer12")]
    tokens = []
    handle = model.register_forward_pre_hook(lambda m, a, kw: tokens.append(kw["input_ids"].numel()),
                                             with_kwargs=True)
    try:
        shared = loglik.continuation_logliks(model, tokenizer, pairs, batch_size=3)
        shared_tokens, tokens[:] = sum(tokens), []
        whole = loglik.whole_pair_logliks(model, tokenizer, pairs, batch_size=3)
        whole_tokens = sum(tokens)
    finally:
        handle.remove()
    assert [n for _, n in shared] == [n for _, n in whole]
    for (a, _), (b, _) in zip(shared, whole, strict=True):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(b)), (a, b)
    assert shared_tokens < whole_tokens / 2  # 8 prompts computed once, not once per choice (29 pairs)
