"""The run pipeline end to end (real model, real adapter, generated data), and its safety rules:
nothing is written before the config and data are validated, no run overwrites another's files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from run_support import rescored

from lladapt.api import run
from lladapt.common.errors import DataError, LladaptError
from lladapt.components.interfaces import Example
from lladapt.evaluation import score


def small_run(model_dir, out, **extra):
    config = {
        "model": str(model_dir),
        "adapter": {"name": "lora", "r": 4, "alpha": 8},
        "data": {"train": [{"name": "arith", "limit": 16}], "cutoff_len": 64},
        "train": {"max_steps": 6, "batch_size": 4, "micro_batch_size": 2, "learning_rate": 0.02,
                  "warmup_steps": 0, "logging_steps": 1, "save_steps": 3},
        "eval": {"datasets": [{"name": "arith", "split": "test"}], "limit": 3, "max_new_tokens": 4},
        "output_dir": str(out),
    }
    config.update(extra)
    return config


def test_run_trains_saves_and_evaluates(stories260k, tmp_path, logits_when_saved):
    out = tmp_path / "run"
    results = run(small_run(stories260k, out), echo=lambda _: None)
    train = results["train"]
    assert train["steps"] == 6 and train["examples"] == 16
    assert train["final_loss"] < train["first_loss"]
    assert results["adapter"]["trainable_parameters"] == 5 * 4 * ((64 + 64) + (64 + 32))  # r=4 on q (64->64), v (64->32: 4 kv heads)
    [scored] = results["eval"]
    assert scored["total"] == 3
    predictions = out / "eval" / "arith-test.jsonl"
    assert len(predictions.read_text().splitlines()) == 3
    assert {k: scored[k] for k in ("correct", "wrong", "unparsed")} == rescored(predictions, "arith")
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    assert (out / "checkpoints" / "step-3" / "adapter" / "adapter_model.safetensors").is_file()
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]

    # the saved adapter, loaded into a fresh base, gives the logits of the model as it was when
    # training ended (recorded by logits_when_saved as the final adapter was saved)
    from lladapt.adapters.model import AdaptedModel
    from lladapt.config import ModelSection
    from lladapt.models.loading import load_model

    trained = logits_when_saved.by_folder["adapter"]
    fresh = load_model(ModelSection(source=str(stories260k)))
    reloaded = AdaptedModel.from_pretrained(fresh.model, fresh.layout, out / "adapter").eval()
    base = load_model(ModelSection(source=str(stories260k))).model
    ids = logits_when_saved.ids
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, trained, rtol=0, atol=1e-6)
        assert not torch.allclose(trained, base(input_ids=ids).logits, atol=1e-4)  # training changed it


def test_run_refuses_an_output_dir_holding_files(stories260k, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text("precious")
    with pytest.raises(LladaptError, match="already holds files"):
        run(small_run(stories260k, out), echo=lambda _: None)
    assert (out / "results.json").read_text() == "precious"


def test_bad_data_stops_before_anything_is_written(stories260k, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "1+1?", "output": "2", "answer": "2"}, {"instruction": 3}]))
    out = tmp_path / "run"
    config = small_run(stories260k, out, data={"train": [{"name": "json", "path": str(bad)}]})
    with pytest.raises(DataError) as info:
        run(config, echo=lambda _: None)
    assert str(bad) in str(info.value) and "record 1" in str(info.value)
    assert not out.exists()


def test_overlap_error_stops_the_run(stories260k, tmp_path):
    out = tmp_path / "run"
    config = small_run(stories260k, out)
    config["data"]["overlap"] = "error"
    config["data"]["train"] = [{"name": "arith", "split": "test", "limit": 4}]
    with pytest.raises(DataError, match="the training data contains evaluation items"):
        run(config, echo=lambda _: None)
    assert not out.exists()


def test_cli_run_reports_errors_without_traceback(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: /nonexistent/model\nadapter: lora\n")
    proc = subprocess.run(
        [sys.executable, "-m", "lladapt.cli", "run", str(path)], capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "Error: model.source: no such folder" in proc.stderr
    assert "/nonexistent/model" in proc.stderr
    assert "Traceback" not in proc.stderr


class _Digits:
    def parse(self, text):
        digits = "".join(c for c in text if c.isdigit())
        return int(digits) if digits else None

    def is_correct(self, prediction, gold):
        return prediction == int(gold)


def test_score_counts_unparsed_apart_from_wrong():
    examples = [Example("q", answer="4"), Example("q", answer="5"), Example("q", answer="6")]
    result = score("toy", examples, ["it is 4", "it is 7", "no idea"], _Digits())
    assert (result.correct, result.unparsed, result.total) == (1, 1, 3)
    assert result.summary()["wrong"] == 1
    assert [p.prediction for p in result.predictions] == [4, 7, None]


def test_overwrite_replaces_an_earlier_run(stories260k, tmp_path):
    out = tmp_path / "run"
    quick = {"max_steps": 2, "batch_size": 2, "micro_batch_size": 2, "save_steps": 1,
             "warmup_steps": 0}
    run(small_run(stories260k, out, train=quick, eval={}), echo=lambda _: None)
    from safetensors.torch import load_file

    def tensors():
        return load_file(out / "adapter" / "adapter_model.safetensors")

    first = tensors()
    same = run(small_run(stories260k, out, train=quick, eval={}), overwrite=True, echo=lambda _: None)
    assert same["train"]["steps"] == 2
    again = tensors()
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)  # the same seed reproduces the run
    other_seed = small_run(stories260k, out, train={**quick, "seed": 7}, eval={})
    run(other_seed, overwrite=True, echo=lambda _: None)
    changed = tensors()
    assert not all(torch.equal(first[k], changed[k]) for k in first)


def test_a_tokenizer_failure_leaves_no_output_folder(stories260k, tmp_path, monkeypatch):
    import lladapt.data.tokenization

    def broken(*args, **kwargs):
        raise LladaptError("the tokenizer failed")

    monkeypatch.setattr(lladapt.data.tokenization, "encode_for_training", broken)
    out = tmp_path / "run"
    with pytest.raises(LladaptError, match="the tokenizer failed"):
        run(small_run(stories260k, out), echo=lambda _: None)
    assert not out.exists()  # so the same command works again without --overwrite


def test_before_and_after_accuracy_and_the_summary(stories260k, tmp_path):
    out = tmp_path / "run"
    messages = []
    config = small_run(stories260k, out, data={"train": [{"name": "arith", "limit": 16}], "cutoff_len": 64,
                                               "val_set_size": 4})
    config["eval"]["before_training"] = True
    config["train"]["progress"] = "plain"
    results = run(config, echo=messages.append)
    assert results["eval_before"][0]["total"] == results["eval"][0]["total"] == 3
    assert (out / "eval-before" / "arith-test.jsonl").is_file()
    assert results["train"]["examples"] == 12 and results["train"]["validation_examples"] == 4
    assert results["train"]["val_loss"] is not None
    text = "\n".join(messages)
    assert "step 1/6  loss " in text and "padding " in text and "val_loss" in text
    assert not any(m.lstrip().startswith("{") for m in messages)  # no JSON on the screen
    summary = next(m for m in messages if "trainable parameters" in m)
    assert "4,480" in summary and "6 (2.00 epochs)" in summary and str(out / "adapter") in summary
    header, row = messages[-1].splitlines()
    assert header.split() == ["dataset", "before", "training", "after", "training"]
    before, after = results["eval_before"][0], results["eval"][0]
    assert row.split() == ["arith-test", f"{100 * before['accuracy']:.1f}%", f"({before['correct']}/3)",
                           f"{100 * after['accuracy']:.1f}%", f"({after['correct']}/3)"]


def test_cli_train_trains_without_evaluating(stories260k, tmp_path):
    import yaml

    out = tmp_path / "run"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(small_run(stories260k, out)))
    proc = subprocess.run([sys.executable, "-m", "lladapt.cli", "train", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"results: {out}/results.json"
    results = json.loads((out / "results.json").read_text())
    assert results["train"]["steps"] == 6 and results["eval"] == []
    assert not (out / "eval").exists()
    assert "step 6/6" in proc.stderr
