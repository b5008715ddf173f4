"""The training loop's recipe: loss under accumulation, step counting at the end of an epoch,
learning-rate schedule and logging, precision, guards, length grouping, validation."""

from __future__ import annotations

import json
import math
import types

import pytest
import torch

from lladapt.common.errors import LladaptError
from lladapt.config import TrainSection
from lladapt.training import make_plan, split_validation, train
from lladapt.training.guards import NonFiniteLossError
from lladapt.training.loop import backward_step
from lladapt.training.precision import Precision, mixed_precision
from lladapt.training.sampler import epoch_batches, padded_share
from tests.training_support import random_examples, tiny_trainable


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _accumulated(examples, chunks, normalization="tokens"):
    model = tiny_trainable()
    micro = [examples[i : i + chunks] for i in range(0, len(examples), chunks)]
    backward_step(model, Precision("no", torch.device("cpu")), micro, pad_token_id=0,
                  normalization=normalization)
    return _grads(model)


def test_accumulated_gradient_equals_one_big_batch():
    examples = random_examples(16, seed=1)  # lengths 3..40, half with masked prompts
    assert len({len(e.input_ids) for e in examples}) > 8
    big = _accumulated(examples, 16)
    four_by_four = _accumulated(examples, 4)
    for name in big:
        assert torch.allclose(big[name], four_by_four[name], atol=1e-6, rtol=1e-5), name
    # the paper code's mean of micro-batch means is a different gradient with unequal lengths
    paper = _accumulated(examples, 4, normalization="micro_batch")
    assert max((paper[n] - big[n]).abs().max().item() for n in big) > 1e-4


def _train(examples, tmp_path, **settings):
    base = {"batch_size": 4, "micro_batch_size": 2, "learning_rate": 0.01, "warmup_steps": 0,
            "logging_steps": 1, "save_steps": 0, "progress": "none"}
    settings = TrainSection(**{**base, **settings})
    model = tiny_trainable()
    result = train(model, examples, settings, learning_rate=settings.learning_rate, pad_token_id=0,
                   checkpoint_dir=tmp_path / "checkpoints", metrics=tmp_path / "metrics.jsonl",
                   echo=lambda _: None)
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return model, result, log


def test_an_epoch_end_gives_a_short_step_not_a_lost_one(tmp_path):
    # 10 micro-batches per epoch, 4 per step, 3 epochs: 30 micro-batches = 7 full steps + 1 of 2
    plan = make_plan(40, TrainSection(batch_size=16, micro_batch_size=4, epochs=3))
    assert plan.steps == 8 and plan.total == 30
    assert list(plan.micro_batches(8)) == [28, 29]
    _, result, log = _train(random_examples(40), tmp_path, batch_size=16, micro_batch_size=4, epochs=3)
    assert result.steps == 8 and result.epochs == 3.0
    assert [r["step"] for r in log] == list(range(1, 9)) and log[-1]["epoch"] == 3.0
    # the short step's loss is its own token mean (not scaled by 2/4): same size as the others
    assert 0.5 < log[-1]["loss"] / log[-2]["loss"] < 2


def test_constant_schedule_is_constant_and_the_logged_rate_is_the_steps_own(tmp_path):
    examples = random_examples(24)
    _, _, log = _train(examples, tmp_path / "c", max_steps=5, lr_scheduler="constant", warmup_steps=100)
    assert [r["lr"] for r in log] == [0.01] * 5
    _, _, log = _train(examples, tmp_path / "l", max_steps=6, lr_scheduler="linear", warmup_steps=2)
    # warm-up 0, 1/2 then linear decay over steps 3..6: the rate each step used
    assert [round(r["lr"] / 0.01, 6) for r in log] == [0.0, 0.5, 1.0, 0.75, 0.5, 0.25]


def test_gradient_checkpointing_on_a_model_without_it_is_an_error(tmp_path):
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(128, 8)
            self.out = torch.nn.Linear(8, 128)

        def forward(self, input_ids, attention_mask=None):
            return types.SimpleNamespace(logits=self.out(self.emb(input_ids)))

    settings = TrainSection(max_steps=1, batch_size=2, micro_batch_size=2, gradient_checkpointing=True,
                            progress="none")
    with pytest.raises(LladaptError, match="gradient_checkpointing: the model \\(Plain\\) does not support"):
        train(Plain(), random_examples(4), settings, learning_rate=0.1, pad_token_id=0, echo=lambda _: None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's refusal")
def test_fp16_on_the_cpu_is_a_clear_error():
    with pytest.raises(LladaptError, match="train.precision: fp16 needs a CUDA GPU"):
        mixed_precision("fp16")


def test_mixed_precision_leaves_the_adapter_in_its_own_dtype(tmp_path):
    model = tiny_trainable()
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.to(torch.bfloat16)
    settings = TrainSection(max_steps=2, batch_size=2, micro_batch_size=2, precision="bf16",
                            progress="none", warmup_steps=0)
    train(model, random_examples(4), settings, learning_rate=0.01, pad_token_id=0, echo=lambda _: None)
    # what evaluation after training uses is what a saved-and-reloaded adapter holds
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.bfloat16}


class _NanAt(torch.nn.Module):
    """Wraps a model; its logits turn NaN from the ``at``-th forward call on."""

    def __init__(self, model, at):
        super().__init__()
        self.model, self.at, self.calls = model, at, 0

    def forward(self, **kwargs):
        self.calls += 1
        out = self.model(**kwargs)
        if self.calls >= self.at:
            out.logits = out.logits * float("nan")
        return out


def test_a_nan_loss_stops_the_run_naming_the_step_and_the_last_checkpoint(tmp_path):
    model = _NanAt(tiny_trainable(), at=5)  # 2 micro-batches per step: step 3's first forward
    settings = TrainSection(max_steps=6, batch_size=4, micro_batch_size=2, save_steps=2,
                            progress="none", warmup_steps=0)
    with pytest.raises(NonFiniteLossError) as info:
        train(model, random_examples(16), settings, learning_rate=0.01, pad_token_id=0,
              checkpoint_dir=tmp_path, echo=lambda _: None)
    message = str(info.value)
    assert message.startswith("training stopped at step 3: loss is nan")
    assert f"the last good checkpoint is {tmp_path / 'step-2'}" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-2"]


def test_length_grouping_is_seeded_and_covers_every_example():
    lengths = [len(e.input_ids) for e in random_examples(50)]
    first = epoch_batches(lengths, 4, seed=1, epoch=0, group_by_length=True)
    assert first == epoch_batches(lengths, 4, seed=1, epoch=0, group_by_length=True)
    assert first != epoch_batches(lengths, 4, seed=1, epoch=1, group_by_length=True)
    assert sorted(i for b in first for i in b) == list(range(50))
    assert padded_share(first, lengths) < padded_share(
        epoch_batches(lengths, 4, seed=1, epoch=0, group_by_length=False), lengths)


def test_length_grouping_cuts_padding_on_math_data(paper_data, stories260k):
    from transformers import AutoTokenizer

    from lladapt.config import DatasetRef
    from lladapt.data.loading import get_template, load_examples

    examples = load_examples(DatasetRef(name="math_data"), data_dir=paper_data, purpose="train")
    assert len(examples) == 3260
    template = get_template("alpaca")
    tokenizer = AutoTokenizer.from_pretrained(stories260k)
    lengths = [len(ids) for ids in tokenizer([template.train_prompt(e) for e in examples])["input_ids"]]
    grouped = padded_share(epoch_batches(lengths, 4, seed=42, epoch=0, group_by_length=True), lengths)
    random_order = padded_share(epoch_batches(lengths, 4, seed=42, epoch=0, group_by_length=False), lengths)
    assert grouped < 0.08
    assert 0.18 < random_order < 0.27


def test_validation_split_is_seeded_and_disjoint():
    items = list(range(100))
    train_part, val = split_validation(items, 12, seed=42)
    assert len(val) == 12 and len(train_part) == 88 and not set(val) & set(train_part)
    assert split_validation(items, 12, seed=42) == (train_part, val)
    assert split_validation(items, 12, seed=1)[1] != val
    with pytest.raises(LladaptError, match="data.val_set_size: 100 leaves nothing to train on"):
        split_validation(items, 100, seed=42)


def test_validation_loss_is_logged_and_keep_best_restores_the_best(tmp_path):
    examples = random_examples(20)
    val = random_examples(6, seed=9)
    settings = TrainSection(max_steps=6, batch_size=4, micro_batch_size=2, eval_steps=2,
                            progress="none", warmup_steps=0, keep_best=True, learning_rate=0.5,
                            precision="fp32")  # compared below with an fp32 forward
    model = tiny_trainable()
    result = train(model, examples, settings, learning_rate=0.5, pad_token_id=0, val_encoded=val,
                   metrics=tmp_path / "m.jsonl", echo=lambda _: None)
    log = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [s for s, _ in result.val_losses] == [2, 4, 6]
    assert [r["step"] for r in log if "val_loss" in r] == [2, 4, 6]
    best_step, best = min(result.val_losses, key=lambda x: x[1])
    assert result.best_step == best_step
    # the model left behind is the best one: its validation loss is the best logged
    from accelerate import Accelerator

    from lladapt.data.tokenization import collate_for_training
    from lladapt.training.loss import label_tokens, summed_loss

    Accelerator(cpu=True)
    batch = collate_for_training(val, 0)
    with torch.no_grad():
        loss = summed_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                           batch["labels"]).item() / sum(label_tokens(e) for e in val)
    assert math.isclose(loss, best, rel_tol=1e-4)


@pytest.mark.parametrize("name", ["linear", "cosine", "constant_with_warmup", "constant"])
def test_schedules_match_transformers(name):
    from transformers import get_scheduler

    from lladapt.training.schedule import make_scheduler

    def rates(make):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = make(optimizer)
        out = []
        for _ in range(12):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    ours = rates(lambda o: make_scheduler(name, o, warmup_steps=3, total_steps=12))
    theirs = rates(lambda o: get_scheduler(name, o, num_warmup_steps=0 if name == "constant" else 3,
                                           num_training_steps=12))
    assert ours == pytest.approx(theirs, abs=1e-12)
