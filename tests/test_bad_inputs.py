"""Broken files the fuzzed corpus led to (tests/fuzz/): each is refused with an error naming the
file, not an `unexpected ...` crash, and nothing is written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lladapt.common.errors import AdapterError, LladaptError
from tests.adapters_support import one_torch_thread, randomise, tiny_adapted  # noqa: F401
from tests.fault_support import config_file, error_line, lladapt, snapshot
from tests.training_support import run_config


def test_an_adapter_tensor_stored_as_integers_is_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from lladapt import testing
    from lladapt.adapters.model import load_adapter
    from tests.adapters_support import layout_of

    adapted = tiny_adapted("llama", {"name": "lora", "r": 4})
    randomise(adapted)
    adapted.save_adapter(tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    tensors = load_file(weights)
    with safe_open(str(weights), "pt") as handle:
        metadata = handle.metadata()
    key = sorted(tensors)[0]
    tensors[key] = tensors[key].to(torch.int8)
    save_file(tensors, str(weights), metadata=metadata)
    model = testing.tiny_model("llama")
    with pytest.raises(AdapterError) as info:
        load_adapter(model, layout_of(model), tmp_path)
    short = key.removeprefix("base_model.model.")
    assert str(info.value) == f"the tensors in '{tmp_path}' do not fit this adapter: wrong dtype: {short} int8 (model float32)"


def test_a_run_config_that_is_not_json_refuses_the_resume_before_writing(stories260k, tmp_path):
    out = tmp_path / "run"
    config = config_file(tmp_path / "c.json", run_config(stories260k, out, max_steps=1, save_steps=0))
    assert lladapt("train", str(config)).exit_code == 0
    (out / "config.json").write_text("{not json")
    before = snapshot(out)
    result = lladapt("train", str(config), "--resume")
    assert result.exit_code == 1 and error_line(result) == (
        f"Error: cannot resume: {out / 'config.json'} is not the JSON object a run writes; the run's recipe is unknown")
    assert snapshot(out) == before


def test_predictions_settings_that_are_not_json_refuse_to_mix(tmp_path):
    from lladapt.evaluation.store import PredictionStore, prompt_hash

    store = PredictionStore(tmp_path / "eval" / "x-test.jsonl", {"model": "m"})
    store.append([{"index": 0, "prompt_sha": prompt_hash("p")}])
    store.settings_path.write_bytes(b"\xff{")
    with pytest.raises(LladaptError) as info:
        PredictionStore(store.path, {"model": "m"}).load(["p"])
    assert "holds predictions made with other settings" in str(info.value)
    assert "(the settings file is unreadable)" in str(info.value)


def test_a_metrics_line_that_is_not_a_record_refuses_the_resume_before_writing(stories260k, tmp_path):
    out = tmp_path / "run"
    config = config_file(tmp_path / "c.json", run_config(stories260k, out, max_steps=2, save_steps=1))
    assert lladapt("train", str(config)).exit_code == 0
    lines = (out / "metrics.jsonl").read_text().splitlines(keepends=True)
    (out / "metrics.jsonl").write_text(lines[0] + '{"step": "x"}\n' + "".join(lines[1:]))
    before = snapshot(out)
    result = lladapt("train", str(config), "--resume")
    assert result.exit_code == 1 and error_line(result) == (
        f"Error: {out / 'metrics.jsonl'}, line 2: not a training step's record; remove that line "
        "(or the file: it is the log, not the checkpoint) and resume again")
    assert snapshot(out) == before
    assert json.loads(lines[0])["step"] == 1


def test_a_checkpoint_state_with_a_field_of_the_wrong_type_is_skipped_naming_it(stories260k, tmp_path):
    from lladapt.api import run

    out = tmp_path / "run"
    config = run_config(stories260k, out, max_steps=3, save_steps=1, save_total_limit=0)
    run(config, echo=lambda _: None)
    shutil.rmtree(out / "adapter")  # as a run cut off after checkpoint 2 leaves its folder
    (out / "trained.json").unlink()
    (out / "results.json").unlink()
    state_path = out / "checkpoints" / "step-2" / "trainer_state.json"
    state = json.loads(state_path.read_text())
    state["orders"] = 7
    state_path.write_text(json.dumps(state))
    messages = []
    results = run(config, resume=True, echo=messages.append)
    assert (f"skipping checkpoint {out / 'checkpoints' / 'step-2'}: incomplete or corrupt: unreadable (ValueError: "
            "trainer_state.json: orders: Input should be an object)") in messages
    assert results["train"]["resumed_from"] == 1


@pytest.mark.parametrize(("text", "error"), [
    (b"model: x\n\x80\n", "Error: invalid config '{path}': not UTF-8 text (byte 9)"),
    (b"model: x\n'[': 1\n", "Error: invalid config '{path}' (1 error):"),
])
def test_configs_the_corpus_broke_lladapt_validate_with(tmp_path, text, error):
    path = tmp_path / "c.yaml"
    path.write_bytes(text)
    result = lladapt("validate", str(path))
    assert result.exit_code == 2 and error_line(result) == error.format(path=path)
    if b"[" in text:
        assert "  [: unknown key. Known keys: model, adapter" in result.stderr


def test_an_adapter_size_torch_cannot_hold_is_a_config_error(stories260k, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"model: {stories260k}\nadapter: {{name: lora, r: 1000000000000000000000000000000}}\n")
    result = lladapt("validate", str(path))
    assert result.exit_code == 2 and error_line(result) == f"Error: invalid config '{path}' (1 error):"
    assert ("  adapter: adapter 'lora' could not be attached with its config ({'r': 1000000000000000000000000000000, "
            "'alpha': 16.0, 'dropout': 0.05, 'use_rslora': False}): TypeError: empty(): argument 'size' failed to "
            "unpack the object at pos 1") in result.stderr
