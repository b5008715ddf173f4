"""Helpers shared by the evaluator tests (not a test module)."""

from __future__ import annotations

from functools import cache

from lladapt import testing
from lladapt.components.interfaces import Example
from lladapt.config import ModelSection
from lladapt.evaluation.generation import Decoding
from lladapt.evaluation.runner import Entry, Evaluation, evaluate_entry, prepared

#: prompts of very different lengths, so that batches need padding.
QUESTIONS = [
    "Add 2 and 3.",
    "Once upon a time there was a little girl named Lily who loved to play in the big green park with her dog.",
    "Tom has 4 apples.",
    "What is 7 minus 2? Lily and Ben went to the shop to buy some red balls and a cake for mom.",
    "Say hi.",
    "The cat sat on the mat and looked at the bird in the tree for a long time.",
    "Count to three.",
    "Sue had 12 toys. She gave 5 to her friend Tim. How many toys does Sue have now?",
    "Why is the sky blue?",
    "Once there was a big dog.",
    "Ben ran to the park to play with his ball and his friends, and then he went home to eat.",
]
EXAMPLES = [Example(instruction=q, answer="5", source=f"t#{i}") for i, q in enumerate(QUESTIONS)]
#: one small configuration of each adapter kind.
ADAPTERS = {
    "series": {"name": "series", "bottleneck_size": 8},
    "parallel": {"name": "parallel", "bottleneck_size": 8},
    "lora": {"name": "lora", "r": 4},
    "prefix": {"name": "prefix", "num_virtual_tokens": 4},
    "prompt": {"name": "prompt", "num_virtual_tokens": 4},
}


def stories(path):
    from lladapt.models.loading import load_model

    return load_model(ModelSection(source=str(path)))


@cache
def stories_tokenizer(path):
    return stories(path).tokenizer


def tiny_llama(vocab: int = 512):
    """A tiny random llama whose vocabulary fits the stories260k tokenizer."""
    return testing.tiny_model("llama", vocab_size=vocab)


def run_entry(model, tokenizer, *, batch_size, max_new_tokens=12, examples=EXAMPLES, merge=True,
              stop=(), store=None, sort=True, continuous=True, pack_weights=True):
    from lladapt.components.plugin_manager import get_registry
    from lladapt.data.loading import get_template, make_parser

    dataset = get_registry("dataset").get("arith")()
    entry = Entry("t-test", "t", "test", dataset, examples, make_parser(dataset))
    decoding = Decoding(max_new_tokens=max_new_tokens, batch_size=batch_size, stop=tuple(stop),
                        sort_by_length=sort, continuous=continuous)
    with prepared(model, merge=merge):
        return evaluate_entry(model, tokenizer, get_template("alpaca"), entry, Evaluation(decoding, pack_weights=pack_weights),
                              store=store)


def answers(score):
    return [(p.response, p.generated_tokens) for p in score.predictions]
