"""``train.report_to``: experiment trackers through accelerate (TensorBoard event files read back;
a missing tracker package is a config error)."""

from __future__ import annotations

import json

import pytest

from lladapt.common.errors import ConfigError
from lladapt.config import TrainSection, load_config
from lladapt.config import trackers as tracker_names
from lladapt.training import trackers as trackers_module
from lladapt.training import train
from tests.training_support import random_examples, tiny_trainable


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder / tracker_names.PROJECT))  # hyperparameters: in a sub-folder
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_gets_loss_learning_rate_and_validation_loss(tmp_path):
    pytest.importorskip("tensorboard")
    settings = TrainSection(max_steps=6, batch_size=4, micro_batch_size=2, learning_rate=0.01,
                            warmup_steps=2, logging_steps=2, eval_steps=3, save_steps=0,
                            progress="none", report_to=["tensorboard"])
    train(tiny_trainable(), random_examples(12), settings, learning_rate=0.01, pad_token_id=0,
          val_encoded=random_examples(4, seed=9), metrics=tmp_path / "m.jsonl",
          tracker_dir=tmp_path / "trackers", run_config={"train": {"learning_rate": 0.01}},
          echo=lambda _: None)
    log = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    scalars = _scalars(tmp_path / "trackers")
    # the same numbers at the same steps as metrics.jsonl: logging steps 1, 2, 4, 6; validation 3, 6
    assert [s for s, _ in scalars["loss"]] == [1, 2, 4, 6]
    assert [s for s, _ in scalars["val_loss"]] == [3, 6]
    for tag in ("loss", "lr", "val_loss"):
        expected = [(r["step"], r[tag]) for r in log if tag in r]
        assert [(s, pytest.approx(v, rel=1e-6)) for s, v in scalars[tag]] == expected, tag
    assert scalars["lr"][:2] == [(1, 0.0), (2, pytest.approx(0.005))]  # linear warmup over 2 steps


def test_no_tracker_by_default_writes_no_files(tmp_path):
    assert TrainSection().report_to == []
    settings = TrainSection(max_steps=2, batch_size=2, micro_batch_size=2, save_steps=0, progress="none")
    train(tiny_trainable(), random_examples(4), settings, learning_rate=0.01, pad_token_id=0,
          tracker_dir=tmp_path / "trackers", echo=lambda _: None)
    assert not (tmp_path / "trackers").exists()


def test_a_tracker_without_its_package_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(tracker_names.TRACKERS, "wandb", ("lladapt_no_such_module", "wandb"))
    path = tmp_path / "run.yaml"
    path.write_text("model: llama-7b\ntrain: {report_to: [tensorboard, wandb]}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [error] = [e for e in info.value.errors if e.path.startswith("train")]
    assert error.path == "train.report_to"
    assert "'wandb' needs the package(s) `wandb`, which is not installed: run `pip install wandb`" in error.message


def test_hyperparameters_are_flat_scalars():
    flat = trackers_module.hyperparameters({"train": {"lr": 0.1, "report_to": ["tensorboard"], "max_steps": None},
                                            "output_dir": "runs/x"})
    assert flat == {"train.lr": 0.1, "train.report_to": "['tensorboard']", "train.max_steps": "None",
                    "output_dir": "runs/x"}
