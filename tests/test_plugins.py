"""The plugin system: built-ins, third-party entry points, blocking, broken plugins, duplicates."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
from plugin_env import env_with, install, write_dist_info

import lladapt
from lladapt.common.errors import PluginError, UnknownComponentError
from lladapt.components import plugin_manager
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
    # the distribution and its version: what a user upgrades or uninstalls
    assert row.split()[:5] == ["answer_parser", "yesno", "example", "lladapt-example", "0.1.0"]
    lora = next(line for line in proc.stdout.splitlines() if " lora " in line)
    assert lora.split()[:5] == ["adapter", "lora", "lladapt.plugins.adapters", "lladapt", lladapt.__version__]
    assert proc.stdout.splitlines()[0].split()[:5] == ["kind", "name", "plugin", "distribution", "description"]
    assert "Reads 'yes' or 'no'" in row
    assert "llama" in proc.stdout and "lora" in proc.stdout
    assert "Warning: plugin 'broken' (distribution 'lladapt-broken') failed: ImportError" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_plugins_json_and_plugin_command(site):
    proc = lladapt_cli("plugins", "--json", env=env_with(site))
    data = json.loads(proc.stdout)
    rows = {(r["kind"], r["name"]): r for r in data["components"]}
    yesno = rows[("answer_parser", "yesno")]
    assert (yesno["plugin"], yesno["distribution"], yesno["version"]) == ("example", "lladapt-example", "0.1.0")
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


OTHER_PLUGIN = """
import lladapt


class Other(lladapt.AnswerParser):
    \"\"\"Another distribution's parser.\"\"\"

    name = "{name}"


@lladapt.hookimpl
def register_answer_parsers(register):
    register(Other)
"""


def _second_distribution(site, parser_name: str) -> None:
    """A distribution 'lladapt-other' that chose the entry-point name 'example' too (its module
    named after the parser: each test imports its own)."""
    module = f"lladapt_other_{parser_name}"
    (site / module).mkdir()
    (site / module / "__init__.py").write_text(OTHER_PLUGIN.format(name=parser_name))
    write_dist_info(site, "lladapt-other", "example", module, version="2.0")


def test_two_distributions_with_the_same_entry_point_name_both_load(tmp_path, monkeypatch):
    site = install(tmp_path / "site", ["lladapt-example"])
    _second_distribution(site, "other")
    monkeypatch.syspath_prepend(str(site))
    registry = lladapt.get_registry("answer_parser")
    assert "yesno" in registry and "other" in registry
    yesno, other = registry.entry("yesno"), registry.entry("other")
    assert yesno.plugin != other.plugin
    assert {yesno.plugin, other.plugin} <= {"example", "example@lladapt-example", "example@lladapt-other"}
    assert plugin_manager.plugin_info(yesno.plugin).label == "lladapt-example 0.1.0"
    assert plugin_manager.plugin_info(other.plugin).label == "lladapt-other 2.0"
    assert plugin_manager.plugin_failures() == []


def test_two_distributions_registering_one_component_name_is_an_error_naming_both(
    tmp_path, monkeypatch
):
    site = install(tmp_path / "site", ["lladapt-example"])
    _second_distribution(site, "yesno")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(PluginError) as info:
        lladapt.get_registry("answer_parser")
    message = str(info.value)
    assert "answer parser name 'yesno' is registered twice" in message
    assert "(distribution 'lladapt-example 0.1.0')" in message
    assert "(distribution 'lladapt-other 2.0')" in message


def test_a_component_of_a_disabled_plugin_is_named_as_disabled(site, monkeypatch):
    monkeypatch.setenv("LLADAPT_DISABLE_PLUGINS", "example")
    with pytest.raises(lladapt.ConfigError) as info:
        lladapt.load_config({"model": "llama-7b", "eval": {"parser": "yesno"}})
    assert str(info.value.errors[0]) == (
        "eval.parser: answer parser 'yesno' is not available: no enabled plugin registers it, and "
        "LLADAPT_DISABLE_PLUGINS=example disables 'example' (lladapt-example 0.1.0), which may "
        "provide it. Registered: choice, choice-answer, letter, letter-answer, number, number-answer"
    )


def test_a_plugin_disabled_by_its_distribution_name(site, monkeypatch):
    monkeypatch.setenv("LLADAPT_DISABLE_PLUGINS", "lladapt-example")
    assert "yesno" not in lladapt.get_registry("answer_parser")
    with pytest.raises(UnknownComponentError, match="its plugin 'example' .distribution "
                       "'lladapt-example 0.1.0'. is disabled by LLADAPT_DISABLE_PLUGINS=lladapt-example"):
        lladapt.get_registry("answer_parser").get("lladapt-example")


def test_a_disabled_builtin_plugin_is_named(monkeypatch):
    monkeypatch.setenv("LLADAPT_DISABLE_PLUGINS", "adapters")
    with pytest.raises(UnknownComponentError) as info:
        lladapt.get_registry("adapter").get("lora")
    assert str(info.value) == (
        "adapter 'lora' is not available: no enabled plugin registers it, and "
        "LLADAPT_DISABLE_PLUGINS=adapters disables 'lladapt.plugins.adapters' "
        f"(lladapt {lladapt.__version__}), which may provide it. Registered: (none)"
    )
