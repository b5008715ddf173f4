"""The docs keep up with the code: every config field and every hook is documented."""

from __future__ import annotations

import inspect
from pathlib import Path

from pydantic import BaseModel

from lladapt import config, hookspecs

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_config_field_is_documented():
    text = (DOCS / "configuration.md").read_text()
    for section in (config.RunConfig, config.ModelSection, config.DataSection,
                    config.TrainSection, config.EvalSection, config.QuantizationConfig):
        for name in section.model_fields:
            assert f"`{name}`" in text, f"{section.__name__}.{name} missing from docs/configuration.md"


def test_every_hook_is_documented_with_its_signature():
    text = (DOCS / "plugins.md").read_text()
    hooks = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("register_")]
    assert len(hooks) == 7
    for name in hooks:
        func = getattr(hookspecs, name)
        params = ", ".join(inspect.signature(func).parameters)
        assert f"`{name}({params})`" in text, name
        assert inspect.getdoc(func), name


def test_config_models_forbid_unknown_keys():
    for section in (config.RunConfig, config.ModelSection, config.DataSection,
                    config.TrainSection, config.EvalSection, config.QuantizationConfig):
        assert issubclass(section, BaseModel) and section.model_config["extra"] == "forbid"


def test_every_adapter_and_placement_field_is_documented():
    import lladapt

    text = (DOCS / "adapters.md").read_text()
    for kind in ("adapter", "placement"):
        for entry in lladapt.get_registry(kind).entries():
            assert f"`{entry.name}`" in text, f"{kind} {entry.name} missing from docs/adapters.md"
            for field in entry.cls.Config.model_fields:
                assert f"`{field}`" in text, f"{kind} {entry.name}.{field} missing from docs/adapters.md"


def test_readme_says_how_builtins_and_third_party_plugins_are_found():
    from importlib import metadata

    from lladapt import plugin_manager

    readme = " ".join((DOCS.parent / "README.md").read_text().split())
    # the built-ins are a list in code, not entry points of lladapt's own distribution
    own = [ep for ep in metadata.entry_points(group="lladapt") if ep.dist and ep.dist.name == "lladapt"]
    assert own == [] and plugin_manager.BUILTIN_PLUGINS
    assert "listed in code (`lladapt.plugin_manager.BUILTIN_PLUGINS`)" in readme
    assert "would be (entry-point group `lladapt`)" not in readme
    assert "third-party plugins register through the entry-point group `lladapt`" in readme


def test_plugins_page_states_each_optional_adapter_method_and_walks_through_the_example():
    import lladapt

    text = (DOCS / "plugins.md").read_text()
    for method in ("merge", "unmerge", "detach", "to_peft", "from_peft", "sites_from_peft"):
        assert f"**`{method}(" in text, f"the contract of Adapter.{method} is missing"
    for attribute in ("site_kind", "modes", "default_mode(role)", "block_position",
                      "default_placement", "default_learning_rate", "peft_type"):
        assert f"| `{attribute}` |" in text, attribute
    assert f"| `\"{lladapt.Adapter.block_position}\"` |" in text  # the documented default
    example = DOCS.parent / "examples" / "lladapt-ia3"
    for path in example.rglob("*.py"):
        assert f"lladapt_ia3/{path.name}" in text, path
