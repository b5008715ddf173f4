"""One adapter folder, one reading: an adapter_config.json that disagrees with the metadata of the
weights file on anything that changes the outputs is refused, naming each key with both values
and the way out (`lladapt adapter fix-config DIR`, or deleting it); settings that change no output
may differ; folders PEFT wrote (no lladapt metadata) load as before; `--adapter` given a run folder
uses its adapter/."""

from __future__ import annotations

import json

import pytest
import torch

from lladapt import testing
from lladapt.adapters.files import CONFIG_FILE, WEIGHTS_FILE
from lladapt.adapters.model import load_adapter
from lladapt.common.errors import AdapterError
from tests.adapters_support import IDS, layout_of, one_torch_thread, randomise, tiny_adapted  # noqa: F401
from tests.fault_support import error_line, lladapt


def _saved(tmp_path, adapter=None, placement=None):
    adapted = tiny_adapted("llama", adapter or {"name": "lora", "r": 4, "alpha": 8}, placement)
    randomise(adapted)
    folder = tmp_path / "adapter"
    adapted.save_adapter(folder)
    return folder, adapted


def _edit(folder, **changes):
    config = json.loads((folder / CONFIG_FILE).read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))


def _load(folder):
    model = testing.tiny_model("llama")
    return load_adapter(model, layout_of(model), folder)


def _refusal(folder, listed):
    return (f"'{folder}': {CONFIG_FILE} disagrees with the metadata of {WEIGHTS_FILE} ({listed}); lladapt reads "
            f"the metadata and PEFT reads {CONFIG_FILE}, so the folder would load as two different adapters. "
            f"Rewrite {CONFIG_FILE} from the metadata with `lladapt adapter fix-config {folder}`, or delete it")


@pytest.mark.parametrize(("changes", "listed"), [
    ({"lora_alpha": 64}, "lora_alpha: 8.0 in the metadata, 64 in adapter_config.json"),
    ({"peft_type": "PREFIX_TUNING"}, "peft_type: 'LORA' in the metadata, 'PREFIX_TUNING' in adapter_config.json"),
    ({"r": 8, "use_rslora": True}, "r: 4 in the metadata, 8 in adapter_config.json; "
                                   "use_rslora: False in the metadata, True in adapter_config.json"),
    ({"target_modules": ["q_proj"]}, "target_modules: ['model.layers.0.self_attn.q_proj', "
     "'model.layers.0.self_attn.v_proj', 'model.layers.1.self_attn.q_proj', 'model.layers.1.self_attn.v_proj'] "
     "in the metadata, ['q_proj'] in adapter_config.json"),
    ({"lora_alpha": None}, "lora_alpha: 8.0 in the metadata, None in adapter_config.json"),
    ({"rank_pattern": {"q_proj": 2}}, "rank_pattern: None in the metadata, {'q_proj': 2} in adapter_config.json"),
])
def test_a_config_that_disagrees_with_the_metadata_is_refused_naming_each_key(tmp_path, changes, listed):
    folder, _ = _saved(tmp_path)
    _edit(folder, **changes)
    with pytest.raises(AdapterError) as info:
        _load(folder)
    assert str(info.value) == _refusal(folder, listed)


def test_settings_that_change_no_output_may_differ_and_a_deleted_config_loads(tmp_path):
    folder, adapted = _saved(tmp_path)
    with torch.no_grad():
        expected = adapted.eval()(IDS).logits
    _edit(folder, lora_dropout=0.3, base_model_name_or_path="/elsewhere", inference_mode=False,
          target_modules=sorted(json.loads((folder / CONFIG_FILE).read_text())["target_modules"], reverse=True),
          rank_pattern={}, modules_to_save=None)
    with torch.no_grad():
        assert torch.equal(_load(folder).eval()(IDS).logits, expected)
    (folder / CONFIG_FILE).unlink()
    with torch.no_grad():
        assert torch.equal(_load(folder).eval()(IDS).logits, expected)


def test_fix_config_rewrites_the_config_from_the_metadata(tmp_path):
    folder, _ = _saved(tmp_path)
    written = (folder / CONFIG_FILE).read_bytes()
    weights = (folder / WEIGHTS_FILE).read_bytes()
    _edit(folder, lora_alpha=64, peft_type="PREFIX_TUNING")
    result = lladapt("adapter", "fix-config", str(folder))
    assert result.exit_code == 0 and result.stdout == f"rewrote {folder / CONFIG_FILE} from the metadata of its weights\n"
    assert (folder / CONFIG_FILE).read_bytes() == written and (folder / WEIGHTS_FILE).read_bytes() == weights
    _load(folder)


def test_a_lladapt_format_folder_is_checked_too(tmp_path):
    folder, _ = _saved(tmp_path, {"name": "series", "bottleneck_size": 8}, "mlp")
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["adapter"]["config"]["bottleneck_size"] = 16
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(AdapterError) as info:
        _load(folder)
    assert "(adapter.config.bottleneck_size: 8 in the metadata, 16 in adapter_config.json)" in str(info.value)
    assert lladapt("adapter", "fix-config", str(folder)).exit_code == 0
    _load(folder)


def test_a_folder_peft_wrote_loads_from_its_config_as_before(tmp_path):
    peft = pytest.importorskip("peft")
    model = testing.tiny_model("llama")
    peft_model = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path)
    loaded = _load(tmp_path)
    assert loaded.adapter.config.alpha == 16 and loaded.adapter.config.r == 4


def test_fix_config_on_folders_it_cannot_fix(tmp_path):
    peft = pytest.importorskip("peft")
    model = testing.tiny_model("llama")
    peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(tmp_path)
    result = lladapt("adapter", "fix-config", str(tmp_path))
    assert result.exit_code == 1 and error_line(result) == (
        f"Error: '{tmp_path / WEIGHTS_FILE}' holds no lladapt metadata: {CONFIG_FILE} is the only description "
        "of this adapter, there is nothing to rewrite it from")


def test_adapter_given_a_run_folder_uses_its_adapter(stories260k, tmp_path):
    run = tmp_path / "run"
    config = tmp_path / "c.json"
    config.write_text(json.dumps({
        "model": str(stories260k), "adapter": {"name": "lora", "r": 2}, "output_dir": str(run),
        "data": {"train": [{"name": "arith", "limit": 4}], "cutoff_len": 48},
        "train": {"max_steps": 2, "batch_size": 4, "micro_batch_size": 4, "progress": "none", "save_steps": 1},
        "eval": {"datasets": [{"name": "arith", "limit": 2}], "max_new_tokens": 2}}))
    assert lladapt("train", str(config)).exit_code == 0
    evaluated = lladapt("eval", str(config), "--adapter", str(run), "--set", f"output_dir={tmp_path / 'ev'}")
    assert evaluated.exit_code == 0, evaluated.output
    assert f"'{run}' is a run folder: evaluating its adapter, {run / 'adapter'}" in evaluated.stderr.splitlines()
    (run / "adapter").rename(tmp_path / "moved")
    refused = lladapt("eval", str(config), "--adapter", str(run), "--set", f"output_dir={tmp_path / 'ev'}")
    assert refused.exit_code == 1 and error_line(refused) == (
        f"Error: '{run}' holds no {WEIGHTS_FILE} (a run folder whose training did not finish? each checkpoint's "
        f"adapter is in {run / 'checkpoints'}/step-N/adapter)")
