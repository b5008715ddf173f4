"""The plugin system: built-ins, third-party entry points, blocking, broken plugins, duplicates."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
from plugin_env import env_with, install

import lladapt
from lladapt import plugin_manager
from lladapt.errors import PluginError, UnknownComponentError
from lladapt.registry import Registry


def lladapt_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "lladapt.cli", *args], capture_output=True, text=True, env=env,
        timeout=300,
    )


@pytest.fixture
def site(tmp_path, monkeypatch):
    path = install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(path))
    return path


def test_builtin_kinds_all_registered():
    for kind, expected in {
        "backbone": {"llama", "bloom", "opt", "gptj"},
        "adapter": {"series", "parallel", "lora", "prefix"},
        "placement": {"attention", "mlp", "both", "modules"},
        "answer_parser": {"number", "letter", "choice"},
        "prompt_template": {"alpaca", "llm-adapters-compat"},
    }.items():
        names = set(lladapt.get_registry(kind).names())
        assert expected <= names, (kind, names)
        for entry in lladapt.get_registry(kind).entries():
            assert entry.plugin.startswith("lladapt.plugins."), entry
            assert entry.cls.description(), f"{kind} {entry.name} has no docstring summary"


def test_third_party_plugin_found_through_entry_point(site):
    entry = lladapt.get_registry("answer_parser").entry("yesno")
    assert entry.plugin == "example"
    parser = entry.cls()
    assert parser.parse("Well, Yes it is") == "yes"
    assert parser.is_correct("no", "No")


def test_broken_plugin_is_reported_by_name_and_does_not_stop_others(site):
    lladapt.get_registry("answer_parser")
    failures = plugin_manager.plugin_failures()
    assert [(f.plugin, f.distribution) for f in failures] == [("broken", "lladapt-broken")]
    assert str(failures[0]) == (
        "plugin 'broken' (distribution 'lladapt-broken') failed: "
        "ImportError: lladapt_broken needs a library that is not installed"
    )
    assert "yesno" in lladapt.get_registry("answer_parser")


def test_disable_plugins_env_blocks_by_name(site, monkeypatch):
    monkeypatch.setenv("LLADAPT_DISABLE_PLUGINS", "example, broken")
    plugin_manager.reset()
    assert "yesno" not in lladapt.get_registry("answer_parser")
    assert plugin_manager.plugin_failures() == []


def test_disable_builtin_plugin(monkeypatch):
    monkeypatch.setenv("LLADAPT_DISABLE_PLUGINS", "lladapt.plugins.adapters")
    plugin_manager.reset()
    assert len(lladapt.get_registry("adapter")) == 0
    assert "llama" in lladapt.get_registry("backbone")


def test_cli_lists_third_party_component_and_warns_about_broken_one(site):
    proc = lladapt_cli("plugins", env=env_with(site))
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if " yesno " in line)
    assert row.split()[:3] == ["answer_parser", "yesno", "example"]
    assert "Reads 'yes' or 'no'" in row
    assert "llama" in proc.stdout and "lora" in proc.stdout
    assert "Warning: plugin 'broken' (distribution 'lladapt-broken') failed: ImportError" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_plugins_json_and_plugin_command(site):
    proc = lladapt_cli("plugins", "--json", env=env_with(site))
    data = json.loads(proc.stdout)
    rows = {(r["kind"], r["name"]): r for r in data["components"]}
    assert rows[("answer_parser", "yesno")]["plugin"] == "example"
    assert {("backbone", n) for n in ("llama", "bloom", "opt", "gptj")} <= set(rows)
    assert data["failures"][0]["plugin"] == "broken"
    hello = lladapt_cli("hello-example", env=env_with(site))
    assert hello.stdout.strip() == "hello from lladapt_example"


def _plugin(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, func in hooks.items():
        setattr(module, hook_name, lladapt.hookimpl(func))
    return module


def test_duplicate_name_names_both_classes():
    class First(lladapt.AnswerParser):
        """One."""

        name = "twice"

    class Second(lladapt.AnswerParser):
        """Two."""

        name = "twice"

    pm = plugin_manager.get_plugin_manager()
    pm.register(_plugin("dup_a", register_answer_parsers=lambda register: register(First)), "dup_a")
    pm.register(_plugin("dup_b", register_answer_parsers=lambda register: register(Second)), "dup_b")
    with pytest.raises(PluginError) as info:
        lladapt.get_registry("answer_parser")
    message = str(info.value)
    assert "answer parser name 'twice' is registered twice" in message
    assert "First" in message and "(plugin 'dup_a')" in message
    assert "Second" in message and "(plugin 'dup_b')" in message


def test_plugin_hook_that_raises_is_recorded_not_fatal(monkeypatch):
    def boom(register):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(plugin_manager, "_distribution_of", lambda name: "lladapt-boom")
    pm = plugin_manager.get_plugin_manager()
    pm.register(_plugin("boom", register_datasets=boom), "boom")
    registry = lladapt.get_registry("dataset")
    assert "gsm8k" in registry
    assert [str(f) for f in plugin_manager.plugin_failures()] == [
        "plugin 'boom' (distribution 'lladapt-boom') failed: RuntimeError: kaboom"
    ]


def test_registry_did_you_mean_and_aliases():
    class Series(lladapt.Adapter):
        """Series."""

        name = "series"
        aliases = ("bottleneck",)

    registry: Registry = Registry("adapter")
    registry.add(Series, plugin="p")
    assert registry.get("bottleneck") is Series
    assert registry.get("SERIES") is Series
    with pytest.raises(UnknownComponentError) as info:
        registry.get("serie")
    assert str(info.value) == "unknown adapter 'serie'. Registered: series; did you mean 'series'?"
    with pytest.raises(PluginError, match="without a non-empty string `name`"):
        registry.add(type("NoName", (lladapt.Adapter,), {}), plugin="p")
