"""The worked example plugin distribution ``examples/lladapt-ia3`` (IA3 adapter, antonyms
dataset, one-word answer parser), built into a real wheel and installed on the path, run end to
end on the real stories260k model: listed, validated, counted, trained, saved, reloaded and loaded
by PEFT."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from click.testing import CliRunner
from plugin_env import IA3_PROJECT, env_with, install_wheel

from lladapt.adapt import AdaptedModel
from lladapt.api import run
from lladapt.cli import cli
from lladapt.config import load_config
from lladapt.models import load_model

#: PEFT's IA3 count on LLaMA-7B for k, v and down: 32 layers x (4096 + 4096 + 11008).
LLAMA_7B_IA3 = 614_400


@pytest.fixture(scope="module")
def ia3_wheel_site(tmp_path_factory):
    """The example built by pip into a wheel and unpacked: a real ``lladapt_ia3-0.1.0.dist-info``."""
    return install_wheel(IA3_PROJECT, tmp_path_factory.mktemp("ia3") / "site")


@pytest.fixture
def ia3_site(ia3_wheel_site, monkeypatch):
    monkeypatch.syspath_prepend(str(ia3_wheel_site))
    return ia3_wheel_site


def _config(tmp_path, stories260k, **extra) -> str:
    data = {"model": str(stories260k), "adapter": "ia3", **extra}
    path = tmp_path / "ia3.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_the_wheel_is_a_real_distribution(ia3_wheel_site):
    [info] = ia3_wheel_site.glob("lladapt_ia3-*.dist-info")
    assert "[lladapt]\nia3 = lladapt_ia3" in (info / "entry_points.txt").read_text()
    assert (ia3_wheel_site / "lladapt_ia3" / "adapter.py").is_file()


def test_listed_by_lladapt_plugins_in_a_fresh_process(ia3_site):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "lladapt.cli", "plugins", "--json"],
        capture_output=True, text=True, env=env_with(ia3_site), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    rows = {(r["kind"], r["name"]): r for r in data["components"]}
    for key in (("adapter", "ia3"), ("dataset", "antonyms"), ("answer_parser", "word")):
        assert (rows[key]["plugin"], rows[key]["distribution"], rows[key]["version"]) == (
            "ia3", "lladapt-ia3", "0.1.0"
        ), key
    assert rows[("adapter", "lora")]["distribution"] == "lladapt"
    assert data["failures"] == []


def test_validated_and_counted(ia3_site, stories260k, tmp_path):
    path = _config(tmp_path, stories260k)
    result = CliRunner().invoke(cli, ["validate", path])
    assert result.exit_code == 0, result.output
    assert result.output == f"{path}: valid\n"
    result = CliRunner().invoke(cli, ["params", path, "--set", "model=llama-7b", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["trainable"] == LLAMA_7B_IA3
    # a misspelled field of the plugin's own Config is a config error like lladapt's own
    bad = CliRunner().invoke(cli, ["validate", path, "--set", "adapter.rank=4"])
    assert bad.exit_code == 2
    assert "adapter.rank: unknown key" in bad.output


def test_same_count_as_peft_on_stories260k(ia3_site, stories260k):
    from peft import IA3Config, get_peft_model

    from lladapt.params import count_parameters

    ours = count_parameters(load_config({"model": str(stories260k), "adapter": "ia3"}))
    base = load_model(load_config({"model": str(stories260k)}).model).model
    peft_model = get_peft_model(base, IA3Config(
        target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"],
        task_type="CAUSAL_LM",
    ))
    assert ours["trainable"] == peft_model.get_nb_trainable_parameters()[0] == 5 * (32 + 32 + 172)


def test_trained_saved_reloaded_and_loaded_by_peft(ia3_site, stories260k, tmp_path):
    from peft import PeftModel

    out = tmp_path / "run"
    path = _config(
        tmp_path, stories260k,
        data={"train": ["antonyms"], "cutoff_len": 48},
        train={"max_steps": 4, "batch_size": 8, "micro_batch_size": 8, "learning_rate": 0.05,
               "warmup_steps": 0, "logging_steps": 1, "save_steps": 0},
        eval={"datasets": ["antonyms"], "limit": 4, "batch_size": 4},
        output_dir=str(out),
    )
    results = run(path, echo=lambda message: None)
    assert results["adapter"] == {"name": "ia3", "trainable_parameters": 5 * (32 + 32 + 172)}
    assert results["train"]["steps"] == 4
    assert results["train"]["final_loss"] < results["train"]["first_loss"]
    [scored] = results["eval"]
    assert scored["total"] == 4  # the plugin's dataset, scored by the plugin's parser

    section = load_config(path).model
    ids = torch.tensor([[1, 40, 300, 72, 5, 260, 9, 100, 33]])
    base_logits = _logits(load_model(section).model, ids)
    loaded = load_model(section)
    adapted = AdaptedModel.from_pretrained(loaded.model, loaded.layout, out / "adapter")
    state = adapted.adapter_state_dict()
    assert len(state) == 15 and not all(torch.all(t == 1) for t in state.values())  # trained
    logits = _logits(adapted, ids)
    assert not torch.allclose(logits, base_logits)

    # saved again and reloaded: bit-identical
    adapted.save_adapter(tmp_path / "again")
    fresh = load_model(section)
    again = AdaptedModel.from_pretrained(fresh.model, fresh.layout, tmp_path / "again")
    assert torch.equal(_logits(again, ids), logits)

    # PEFT loads the folder lladapt wrote: same logits within 1e-5
    peft_model = PeftModel.from_pretrained(load_model(section).model, str(out / "adapter")).eval()
    assert torch.allclose(_logits(peft_model, ids), logits, atol=1e-5, rtol=0)

    # merged: same outputs; unmerged: restored exactly; detached: the base model again
    adapted.merge()  # (W * s) x rounds differently from (W x) * s: float32 round-off
    assert torch.allclose(_logits(adapted, ids), logits, atol=1e-5)  # rtol 1e-5, as for LoRA
    adapted.unmerge()
    assert torch.equal(_logits(adapted, ids), logits)
    base = adapted.unload()
    assert torch.equal(_logits(base, ids), base_logits)
    assert not [key for key in base.state_dict() if "ia3" in key]


def test_a_folder_peft_wrote_loads_in_lladapt(ia3_site, stories260k, tmp_path):
    from peft import IA3Config, get_peft_model

    section = load_config({"model": str(stories260k)}).model
    torch.manual_seed(0)
    peft_model = get_peft_model(load_model(section).model, IA3Config(
        target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"],
        task_type="CAUSAL_LM",
    ))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "ia3_l" in name:
                param.uniform_(0.5, 1.5)
    peft_model.save_pretrained(str(tmp_path / "peft"))
    ids = torch.tensor([[1, 7, 99, 250, 3]])
    loaded = load_model(section)
    adapted = AdaptedModel.from_pretrained(loaded.model, loaded.layout, tmp_path / "peft")
    assert adapted.adapter.name == "ia3"
    assert {s.mode for s in adapted.sites if s.role == "down"} == {"input"}
    assert torch.allclose(_logits(adapted, ids), _logits(peft_model.eval(), ids), atol=1e-5, rtol=0)


def test_disabled_plugin_is_named_not_unknown(ia3_site, stories260k, tmp_path, monkeypatch):
    monkeypatch.setenv("LLADAPT_DISABLE_PLUGINS", "ia3")
    result = CliRunner().invoke(cli, ["validate", _config(tmp_path, stories260k)])
    assert result.exit_code == 2
    assert (
        "  adapter.name: adapter 'ia3' is not available: its plugin 'ia3' (distribution "
        "'lladapt-ia3 0.1.0') is disabled by LLADAPT_DISABLE_PLUGINS=ia3. Registered: "
    ) in result.output
