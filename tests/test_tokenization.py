"""Training examples -> token ids, the paper code's way."""

from __future__ import annotations

import pytest

from lladapt.components.interfaces import Example
from lladapt.data.loading import get_template
from lladapt.data.tokenization import IGNORE_INDEX, collate_for_training, encode_for_training

EXAMPLE = Example("What is 2 plus 3?", output="2 + 3 = 5. The answer is 5.", answer="5")


@pytest.fixture
def tokenizer(stories260k):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(stories260k)


def test_full_text_with_eos_and_prompt_in_the_loss(tokenizer):
    template = get_template("alpaca")
    enc = encode_for_training(tokenizer, template, EXAMPLE, cutoff_len=512)
    expected = tokenizer(template.train_prompt(EXAMPLE))["input_ids"] + [tokenizer.eos_token_id]
    assert enc.input_ids == expected
    assert enc.labels == expected


def test_train_on_inputs_false_masks_exactly_the_prompt(tokenizer):
    template = get_template("alpaca")
    enc = encode_for_training(tokenizer, template, EXAMPLE, cutoff_len=512, train_on_inputs=False)
    n_prompt = len(tokenizer(template.train_prefix(EXAMPLE))["input_ids"])
    assert enc.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert enc.labels[n_prompt:] == enc.input_ids[n_prompt:]
    assert n_prompt < len(enc.input_ids)


def test_cutoff_truncates_and_then_adds_no_eos(tokenizer):
    enc = encode_for_training(tokenizer, get_template("alpaca"), EXAMPLE, cutoff_len=10)
    assert len(enc.input_ids) == 10
    assert enc.input_ids[-1] != tokenizer.eos_token_id


def test_collate_right_pads_and_masks(tokenizer):
    template = get_template("alpaca")
    short = encode_for_training(tokenizer, template, EXAMPLE, cutoff_len=12)
    long = encode_for_training(tokenizer, template, EXAMPLE, cutoff_len=20)
    batch = collate_for_training([short, long], pad_token_id=0)
    assert batch["input_ids"].shape == (2, 20)
    assert batch["attention_mask"][0].tolist() == [1] * 12 + [0] * 8
    assert batch["labels"][0, 12:].tolist() == [IGNORE_INDEX] * 8
    assert batch["input_ids"][1].tolist() == long.input_ids
