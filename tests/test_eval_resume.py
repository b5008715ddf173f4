"""Resumable evaluation: a SIGKILLed `lladapt eval` resumes without recomputing, equal to an
uninterrupted run; changed settings refuse to mix; entries of one dataset and split are kept
apart; an adapter is evaluated only when trained or asked for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from adapters_support import one_torch_thread  # noqa: F401

from lladapt.api import evaluate
from lladapt.common.errors import LladaptError

TOTAL = 24


def _config(stories260k, out, **eval_fields):
    return {
        "model": str(stories260k),
        "eval": {"datasets": [{"name": "arith", "test_size": TOTAL}], "batch_size": 4,
                 "max_new_tokens": 40, **eval_fields},
        "output_dir": str(out),
    }


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _count_generated(monkeypatch):
    from lladapt.evaluation import runner
    from lladapt.evaluation.streaming import SharedStream

    seen = []
    real = runner.generate_batch

    def counting(model, tokenizer, prompts, decoding):
        seen.extend(prompts)
        return real(model, tokenizer, prompts, decoding)

    monkeypatch.setattr(runner, "generate_batch", counting)
    real_add = SharedStream.add  # the continuous path (one process, greedy)

    def counting_add(self, key, prompts, *args):
        seen.extend(index for index, _ in prompts)
        return real_add(self, key, prompts, *args)

    monkeypatch.setattr(SharedStream, "add", counting_add)
    return seen


def _strip(results):
    return [{k: v for k, v in e.items() if k not in ("seconds", "resumed")} for e in results["eval"]]


def test_a_killed_evaluation_resumes_without_recomputing(stories260k, tmp_path, monkeypatch):
    killed_dir = tmp_path / "killed"
    config_file = tmp_path / "eval.yaml"
    config_file.write_text(yaml.safe_dump(_config(stories260k, killed_dir)))
    predictions = killed_dir / "eval" / "arith-test.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "lladapt", "eval", str(config_file)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None and len(_lines(predictions)) < 8:
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    finished = {r["index"] for r in _lines(predictions)}
    assert 8 <= len(finished) < TOTAL, "the kill came too late to test resuming"
    assert not (killed_dir / "results.json").exists()

    seen = _count_generated(monkeypatch)
    resumed = evaluate(str(config_file), echo=lambda _: None)
    assert len(seen) == TOTAL - len(finished)  # only the missing items were generated
    assert resumed["eval"][0]["resumed"] == len(finished)
    assert sorted(r["index"] for r in _lines(predictions)) == list(range(TOTAL))

    # each prediction keeps its share of its batch's time, so a resumed entry's seconds include
    # the time spent before the kill
    records = _lines(predictions)
    assert all(r["seconds"] > 0 for r in records)
    before_kill = sum(r["seconds"] for r in records if r["index"] in finished)
    assert resumed["eval"][0]["seconds"] >= round(before_kill, 2)

    seen.clear()
    again = evaluate(str(config_file), echo=lambda _: None)  # everything there: nothing to do
    assert seen == [] and again["eval"][0]["resumed"] == TOTAL
    assert again["eval"][0]["seconds"] >= round(sum(r["seconds"] for r in records), 2) > 0

    whole = evaluate(_config(stories260k, tmp_path / "whole"), echo=lambda _: None)
    assert _strip(resumed) == _strip(whole)
    by_index = {r["index"]: r["response"] for r in _lines(predictions)}
    assert by_index == {r["index"]: r["response"] for r in _lines(tmp_path / "whole" / "eval" / "arith-test.jsonl")}


def test_a_cut_last_line_is_recomputed(stories260k, tmp_path, monkeypatch):
    config = _config(stories260k, tmp_path, max_new_tokens=8)
    evaluate(config, echo=lambda _: None)
    path = tmp_path / "eval" / "arith-test.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:5]) + lines[5][:20])  # killed while writing line 6
    seen = _count_generated(monkeypatch)
    result = evaluate(config, echo=lambda _: None)
    assert len(seen) == TOTAL - 5 and result["eval"][0]["resumed"] == 5
    assert len(_lines(path)) == TOTAL


def test_settings_that_change_answers_refuse_to_mix(stories260k, tmp_path, monkeypatch):
    evaluate(_config(stories260k, tmp_path, max_new_tokens=8), echo=lambda _: None)
    with pytest.raises(LladaptError, match=r"(?s)other settings.*max_new_tokens: 8 -> 9"):
        evaluate(_config(stories260k, tmp_path, max_new_tokens=9), echo=lambda _: None)
    with pytest.raises(LladaptError, match=r"(?s)other settings.*stop: \[\] -> \[\"Lily\"\]"):
        evaluate(_config(stories260k, tmp_path, max_new_tokens=8, stop="Lily"), echo=lambda _: None)
    # batch size does not change answers: it resumes
    seen = _count_generated(monkeypatch)
    evaluate(_config(stories260k, tmp_path, max_new_tokens=8, batch_size=3), echo=lambda _: None)
    assert seen == []
    # a line whose prompt is not the dataset's item any more
    path = tmp_path / "eval" / "arith-test.jsonl"
    records = _lines(path)
    records[3]["prompt_sha"] = "0" * 16
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(LladaptError, match=r"line 4: item (\d+) does not match the dataset.s item \1 now"):
        evaluate(_config(stories260k, tmp_path, max_new_tokens=8), echo=lambda _: None)


def test_two_entries_of_one_dataset_and_split_are_kept_apart(stories260k, tmp_path):
    config = _config(stories260k, tmp_path, max_new_tokens=8)
    config["eval"]["datasets"] = [{"name": "arith", "test_size": 6, "seed": 0},
                                  {"name": "arith", "test_size": 6, "seed": 1}]
    results = evaluate(config, echo=lambda _: None)
    assert [e["label"] for e in results["eval"]] == ["arith-test", "arith-test-2"]
    assert [e["options"]["seed"] for e in results["eval"]] == [0, 1]
    first, second = (_lines(tmp_path / "eval" / f"{n}.jsonl") for n in ("arith-test", "arith-test-2"))
    assert len(first) == len(second) == 6
    assert first[0]["prompt_sha"] != second[0]["prompt_sha"]


def test_an_untrained_adapter_is_evaluated_only_on_request(stories260k, tmp_path):
    config = _config(stories260k, tmp_path, max_new_tokens=4)
    config["adapter"] = {"name": "lora", "r": 2}
    with pytest.raises(LladaptError, match=r"initial \(untrained\) weights: pass --adapter DIR"):
        evaluate(config, echo=lambda _: None)
    config["eval"]["untrained_adapter"] = True
    assert evaluate(config, echo=lambda _: None)["adapter"]["name"] == "lora"


def test_lladapt_eval_with_a_saved_adapter_folder(stories260k, tmp_path):
    from adapters_support import randomise
    from eval_support import stories

    from lladapt.adapters.model import attach_from_config
    from lladapt.cli import main

    loaded = stories(stories260k)
    adapted = attach_from_config(loaded.model, loaded.layout, {"name": "lora", "r": 4})
    randomise(adapted, std=0.3)
    adapted.save_adapter(tmp_path / "adapter")
    base_only = evaluate(_config(stories260k, tmp_path / "base", max_new_tokens=12), echo=lambda _: None)

    config_file = tmp_path / "eval.yaml"
    config_file.write_text(yaml.safe_dump(_config(stories260k, tmp_path / "ad", max_new_tokens=12)))
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(config_file), "--adapter", str(tmp_path / "adapter")])
    assert exit_info.value.code in (0, None)
    results = json.loads((tmp_path / "ad" / "results.json").read_text())
    assert results["adapter"]["name"] == "lora" and results["adapter"]["trainable_parameters"] == 5 * 4 * (128 + 96)
    responses = [r["response"] for r in _lines(tmp_path / "ad" / "eval" / "arith-test.jsonl")]
    assert responses != [r["response"] for r in _lines(tmp_path / "base" / "eval" / "arith-test.jsonl")]
    assert base_only["adapter"] is None


def test_lladapt_eval_reports_a_missing_adapter_folder(stories260k, tmp_path):
    from click.testing import CliRunner

    from lladapt.cli import _load_core_commands, cli

    _load_core_commands()
    config_file = tmp_path / "eval.yaml"
    config_file.write_text(yaml.safe_dump(_config(stories260k, tmp_path / "o")))
    result = CliRunner().invoke(cli, ["eval", str(config_file), "--adapter", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "adapter folder" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output


def test_the_progress_bar_shows_items_rate_eta_and_running_accuracy(stories260k, tmp_path):
    import io

    from rich.console import Console

    from lladapt.evaluation.progress import RichProgress

    stream = io.StringIO()
    bar = RichProgress(Console(file=stream, force_terminal=True, width=150))
    config = _config(stories260k, tmp_path, max_new_tokens=4)
    config["eval"]["datasets"][0]["test_size"] = 6
    results = evaluate(config, echo=lambda _: None, progress=bar)
    out = stream.getvalue()
    correct = results["eval"][0]["correct"]
    assert "arith-test" in out and "6/6" in out and "items/s" in out and "ETA" in out
    assert f"acc {100 * correct / 6:.1f}%" in out


def test_the_running_accuracy_counts_resumed_and_new_items():
    import io

    from rich.console import Console

    from lladapt.evaluation.progress import RichProgress

    stream = io.StringIO()
    bar = RichProgress(Console(file=stream, force_terminal=True, width=150))
    bar.start("gsm8k-test", 8, 2, 1)  # 2 items resumed, 1 of them correct
    bar.advance(2, 2)
    bar.advance(2, 1)
    bar.stop()
    last_frame = stream.getvalue().split("\r")[-1]
    assert "6/8" in last_frame and "acc 66.7%" in last_frame  # (1 + 2 + 1) / 6


def test_lladapt_eval_with_a_peft_adapter_folder_answers_as_the_peft_model(stories260k, tmp_path):
    import torch
    from eval_support import stories
    from peft import LoraConfig, get_peft_model

    from lladapt.config import load_config
    from lladapt.data.loading import eval_sets, get_template
    from lladapt.evaluation.generation import finish

    loaded = stories(stories260k)
    peft_model = get_peft_model(loaded.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    peft_model.save_pretrained(tmp_path / "peft")
    config = load_config(_config(stories260k, tmp_path / "out", max_new_tokens=10))
    results = evaluate(config, adapter=tmp_path / "peft", echo=lambda _: None)
    assert results["adapter"]["name"] == "lora"

    template, tokenizer = get_template("alpaca"), loaded.tokenizer
    tokenizer.padding_side = "left"
    peft_model.eval()
    expected = []
    for ex in eval_sets(config)[0].examples:
        prompt = template.eval_prompt(ex)
        enc = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            row = peft_model.generate(**enc, max_new_tokens=10, do_sample=False)[0, enc["input_ids"].shape[1]:]
        expected.append(template.extract_response(prompt + finish(tokenizer, row.tolist(), [2], ()).text))
    by_index = {r["index"]: r["response"] for r in _lines(tmp_path / "out" / "eval" / "arith-test.jsonl")}
    assert [by_index[i] for i in range(TOTAL)] == expected
