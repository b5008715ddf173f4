"""Config loading and validation: every error at once, dotted paths, did-you-mean, overrides."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from lladapt.common.errors import ConfigError
from lladapt.config import RunConfig, apply_overrides, load_config

#: a config with three independent mistakes, all to be reported in one run.
THREE_MISTAKES = """
model: llama-7b
adapter: {name: lora, dropuot: 0.1}
train: {learning_rate: -0.0003}
data: {template: alpacca}
"""


def write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_minimal_config_has_the_paper_defaults(tmp_path):
    config = load_config(write(tmp_path, "model: llama-7b\n"))
    assert config.model.source == "llama-7b"
    assert config.adapter is None
    assert (config.train.batch_size, config.train.micro_batch_size) == (16, 4)
    assert config.train.epochs == 3 and config.train.warmup_steps == 100
    assert config.data.cutoff_len == 256 and config.data.train_on_inputs is True
    assert config.data.template == "alpaca"
    assert config.model.trust_remote_code is False


def test_component_fields_validated_against_their_own_config(tmp_path):
    path = write(
        tmp_path,
        """
        model: {source: llama-7b}
        adapter: {name: lora, r: 16, alpha: 32}
        placement: {name: modules, modules: [{name: q}, {name: v}]}
        data: {train: [arith], template: alpaca}
        """,
    )
    config = load_config(path)
    assert config.adapter.options.r == 16
    assert type(config.adapter.options).__qualname__.endswith("Config")
    assert config.data.train[0].name == "arith"


def test_three_mistakes_reported_together(tmp_path):
    path = write(tmp_path, THREE_MISTAKES)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    errors = {e.path: e.message for e in info.value.errors}
    assert errors == {
        "train.learning_rate": "must be greater than 0 (got -0.0003)",
        "adapter.dropuot": "unknown key; did you mean 'dropout'?",
        "data.template": "unknown prompt template 'alpacca'. Registered: alpaca, llm-adapters-compat; "
                         "did you mean 'alpaca'?",
    }
    assert str(info.value).startswith(f"invalid config '{path}' (3 errors):\n  ")


def test_unknown_component_name_suggests(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "model: llama-7b\nadapter: {name: lorra}\n"))
    [error] = info.value.errors
    assert error.path == "adapter.name"
    assert error.message.startswith("unknown adapter 'lorra'. Registered: ")
    assert error.message.endswith("did you mean 'lora'?")


def test_unknown_top_level_key_suggests(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "model: llama-7b\ntrian: {epochs: 1}\n"))
    assert [str(e) for e in info.value.errors] == ["trian: unknown key; did you mean 'train'?"]


def test_missing_model_and_bad_types(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "train: {batch_size: 10, micro_batch_size: 4}\n"))
    messages = [str(e) for e in info.value.errors]
    assert "model: required" in messages
    assert "train: batch_size (10) must be a multiple of micro_batch_size (4)" in messages[1]


def test_overrides_apply_by_dotted_path(tmp_path):
    path = write(tmp_path, "model: llama-7b\nadapter: lora\n")
    config = load_config(path, ["train.learning_rate=1e-4", "adapter.r=4", "model.dtype=bfloat16"])
    assert config.train.learning_rate == 1e-4
    assert config.adapter.options.r == 4
    assert config.model.dtype == "bfloat16"


def test_override_errors():
    with pytest.raises(ConfigError, match="expected dotted.key=value, got 'train.epochs'"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(ConfigError, match="no list item 3"):
        apply_overrides({"data": {"train": ["arith"]}}, ["data.train.3.limit=2"])


def test_json_config_and_parse_errors(tmp_path):
    good = tmp_path / "run.json"
    good.write_text(json.dumps({"model": "opt-6.7b"}))
    assert load_config(good).model.source == "opt-6.7b"
    bad = write(tmp_path, "model: [unclosed\n", name="bad.yaml")
    with pytest.raises(ConfigError, match=r"invalid config '.*bad.yaml': cannot parse"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    listy = write(tmp_path, "- model\n", name="list.yaml")
    with pytest.raises(ConfigError, match="the top level must be a mapping of sections, not list"):
        load_config(listy)


def test_dict_source_and_round_trip():
    config = load_config({"model": "llama-7b", "adapter": {"name": "series", "bottleneck_size": 64}})
    again = load_config(config)
    assert again.adapter.options == config.adapter.options
    assert isinstance(again, RunConfig)


def test_cli_validate_exit_code_2_and_no_traceback(tmp_path):
    path = write(tmp_path, THREE_MISTAKES)
    proc = subprocess.run(
        [sys.executable, "-m", "lladapt.cli", "validate", str(path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"Error: invalid config '{path}' (3 errors):")
    assert "Traceback" not in proc.stderr
    debug = subprocess.run(
        [sys.executable, "-m", "lladapt.cli", "--debug", "validate", str(path)],
        capture_output=True, text=True, timeout=300,
    )
    assert "Traceback" in debug.stderr
