"""``lladapt params``: exact parameter counts of the paper's architectures from presets (meta
device: no weights, no network), and of local folders, counting tied embeddings once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lladapt.adapters.meta_check import count_parameters
from lladapt.cli import cli
from lladapt.config import load_config
from lladapt.testing import tiny_model

#: the base sizes of DESIGN.md section 5 (the paper's Table 1 models) and OPT-6.7B.
PRESET_TOTALS = {
    "llama-7b": ("llama", 6_738_415_616),
    "llama-13b": ("llama", 13_015_864_320),
    "bloom-7b1": ("bloom", 7_069_016_064),
    "gpt-j-6b": ("gptj", 6_050_882_784),
    "opt-6.7b": ("opt", 6_658_473_984),
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def _params_json(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["params", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("preset", PRESET_TOTALS)
def test_preset_totals_via_the_cli(preset, tmp_path):
    backbone, total = PRESET_TOTALS[preset]
    counts = _params_json(str(_write(tmp_path, f"model: {preset}\n")))
    assert counts == {
        "model": preset,
        "backbone": backbone,
        "adapter": None,
        "placement": None,
        "base": total,
        "trainable": 0,
        "total": total,
        "trainable_percent": 0.0,
    }


def test_console_script_offline_prints_the_llama_7b_total(tmp_path):
    """The installed ``lladapt`` command, in a fresh process with the hub switched off."""
    exe = Path(sys.executable).with_name("lladapt")
    if not exe.exists():
        pytest.skip("the lladapt console script is not installed beside this python")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run(
        [str(exe), "params", "--json", str(_write(tmp_path, "model: llama-7b\n"))],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    counts = json.loads(out.stdout)
    assert (counts["total"], counts["trainable"]) == (6_738_415_616, 0)


def test_offline_hub_id_is_a_clear_cli_error(tmp_path):
    exe = Path(sys.executable).with_name("lladapt")
    if not exe.exists():
        pytest.skip("the lladapt console script is not installed beside this python")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    path = _write(tmp_path, "model: lladapt-test/no-such-model\n")
    out = subprocess.run(
        [str(exe), "params", str(path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert (
        "Error: cannot load model 'lladapt-test/no-such-model': it is not a local folder or a "
        "preset, HF_HUB_OFFLINE is set, and it is not in the Hugging Face cache "
        f"({tmp_path / 'hf' / 'hub'})."
    ) in out.stderr


def test_human_output(tmp_path):
    result = CliRunner().invoke(cli, ["params", str(_write(tmp_path, "model: bloom-7b1\n"))])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "model:     bloom-7b1",
        "adapter:   (none)",
        "trainable: 0",
        "total:     7,069,016,064",
        "share:     0.0000%",
    ]


def test_set_override_picks_the_model(tmp_path):
    counts = _params_json(str(_write(tmp_path, "model: llama-7b\n")), "--set", "model=gpt-j-6b")
    assert (counts["model"], counts["total"]) == ("gpt-j-6b", 6_050_882_784)


def test_stories260k_folder(stories260k):
    counts = count_parameters(load_config({"model": str(stories260k)}))
    assert (counts["backbone"], counts["base"], counts["total"]) == ("llama", 260_032, 260_032)


@pytest.mark.parametrize(
    ("family", "tied", "expected"),
    [("bloom", True, 108_416), ("llama", False, 78_144), ("opt", True, 75_328)],
)
def test_tied_embeddings_count_once(tmp_path, family, tied, expected):
    model = tiny_model(family)
    assert model.config.tie_word_embeddings is tied
    assert (model.lm_head.weight is model.get_input_embeddings().weight) is tied
    model.save_pretrained(tmp_path)
    counts = count_parameters(load_config({"model": str(tmp_path)}))
    assert counts["total"] == expected == sum(p.numel() for p in model.parameters())


def test_missing_folder_is_a_clear_cli_error(tmp_path):
    result = CliRunner().invoke(cli, ["params", str(_write(tmp_path, "model: ./missing-model\n"))])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: model.source: no such folder './missing-model'")
