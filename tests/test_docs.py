"""The docs keep up with the code: every config, adapter and placement field is documented in
its own section's table (and nothing else is), the literal defaults there are the code's, and
every hook is documented with its signature."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from lladapt import config
from lladapt.components import hookspecs

DOCS = Path(__file__).resolve().parents[1] / "docs"

#: each config model and the heading of its section in docs/configuration.md.
CONFIG_SECTIONS = {
    config.ModelSection: "model",
    config.QuantizationConfig: "model.quantization",
    config.DataSection: "data",
    config.TrainSection: "train",
    config.EvalSection: "eval",
}


def code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def field_tables(page: str) -> list[tuple[int, list[str], list[dict[str, str]]]]:
    """Every markdown table of ``page`` that has a ``field`` column, with the level and code spans
    of the heading it sits under, as (level, heading names, rows as {column: cell})."""
    tables = []
    level, names, lines = 0, [], page.splitlines() + [""]
    block: list[str] = []
    for line in lines:
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            header, *rows = ([c.strip() for c in row.strip().strip("|").split("|")] for row in block)
            if "field" in header:
                tables.append((level, names, [dict(zip(header, row, strict=True)) for row in rows[1:]]))
            block = []
        if match := re.match(r"(#+) (.*)", line):
            level, names = len(match.group(1)), code_spans(match.group(2))
    return tables


def documented(page: str, component: str) -> dict[str, str]:
    """``{field: documented default}`` of ``component`` in ``page``: rows of field tables whose
    adapter/placement column names it, or of tables without such a column under a heading that
    names it. A field named anywhere else on the page does not count."""
    found: dict[str, str] = {}
    for _, heading, rows in field_tables(page):
        for row in rows:
            owners = code_spans(row.get("adapter") or row.get("placement") or "") or heading
            if component in owners:
                [name] = code_spans(row["field"])
                assert name not in found, f"{component}.{name} is documented twice"
                found[name] = row["default"]
    return found


def check_fields(model: type[BaseModel], documented: dict[str, str], where: str) -> None:
    """The documented fields are exactly ``model``'s, and a literal default matches the code's
    (a default the code leaves to None, a factory or the user is explained in words instead)."""
    assert sorted(documented) == sorted(model.model_fields), where
    for name, info in model.model_fields.items():
        default = info.default
        if default is None or default is PydanticUndefined or info.default_factory is not None:
            continue
        cell = documented[name].strip("`")
        if isinstance(default, bool):
            assert cell == str(default).lower(), f"{where}: {name} defaults to {default}, documented {cell}"
        elif isinstance(default, (int, float)):
            assert float(cell) == default, f"{where}: {name} defaults to {default}, documented {cell}"
        else:
            assert cell == str(default), f"{where}: {name} defaults to {default!r}, documented {cell}"


def test_every_config_field_is_documented_in_its_own_section():
    text = (DOCS / "configuration.md").read_text()
    top = {n for level, names in _headings(text) if level == 2 for n in names}
    assert top == set(config.RunConfig.model_fields)
    for model, section in CONFIG_SECTIONS.items():
        check_fields(model, documented(text, section), f"docs/configuration.md, {section}")


def _headings(page: str) -> list[tuple[int, list[str]]]:
    return [(len(m.group(1)), code_spans(m.group(2))) for m in re.finditer(r"^(#+) (.*)$", page, re.M)]


def test_a_field_named_only_elsewhere_on_the_page_does_not_count():
    page = """## `train`

| field | default | meaning |
|---|---|---|
| `epochs` | 3 | passes |

## `eval`

Mentions `seed` and `limit` in prose.

| adapter | field | default | meaning |
|---|---|---|---|
| `lora` | `seed` | 1 | a row of another component |
"""
    assert documented(page, "train") == {"epochs": "3"}
    assert documented(page, "eval") == {}
    assert documented(page, "lora") == {"seed": "1"}


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
    for section in (config.RunConfig, *CONFIG_SECTIONS):
        assert issubclass(section, BaseModel) and section.model_config["extra"] == "forbid"


def test_every_adapter_and_placement_field_is_documented_in_its_own_table():
    import lladapt

    text = (DOCS / "adapters.md").read_text()
    for kind in ("adapter", "placement"):
        for entry in lladapt.get_registry(kind).entries():
            assert f"`{entry.name}`" in text, f"{kind} {entry.name} missing from docs/adapters.md"
            check_fields(entry.cls.Config, documented(text, entry.name), f"docs/adapters.md, {entry.name}")


#: what the documented defaults of the encoders' hidden widths mean, on a given model.
WIDTHS = {
    "key/value heads x head dim": lambda model, layout: layout.num_key_value_heads * layout.head_dim,
    "embedding width": lambda model, layout: model.get_input_embeddings().weight.shape[1],
    "hidden size": lambda model, layout: layout.hidden_size,
}


@pytest.mark.parametrize(("adapter", "fields", "first_layer"), [
    ("prefix", {"prefix_projection": True}, "transform.0.weight"),
    ("ptuning", {"encoder": "mlp"}, "mlp_head.0.weight"),
])
def test_documented_encoder_hidden_size_default_is_the_codes(adapter, fields, first_layer):
    """On a grouped-query model (hidden 64, 2 key/value heads of 16) the widths differ, so the
    documented default must be the one the code builds."""
    from lladapt import get_registry, testing
    from lladapt.adapters.model import attach_from_config
    from lladapt.plugins.adapters.prompt_learning import MODULE_NAME

    default = documented((DOCS / "adapters.md").read_text(), adapter)["encoder_hidden_size"]
    model = testing.tiny_model("llama")
    layout = get_registry("backbone").get("llama")().layout(model.config)
    expected = WIDTHS[default](model, layout)
    adapted = attach_from_config(model, layout, {"name": adapter, **fields})
    weight = adapted.base_model.get_submodule(MODULE_NAME).get_parameter(first_layer)
    assert weight.shape[0] == expected


def test_documented_eval_file_is_the_one_a_run_writes(stories260k, tmp_path):
    """docs/configuration.md names the predictions file of each evaluated dataset; an
    evaluation-only run writes exactly that file."""
    from lladapt.api import run

    [pattern] = [s for s in code_spans((DOCS / "configuration.md").read_text()) if s.startswith("eval/")]
    out = tmp_path / "run"
    run({"model": str(stories260k), "output_dir": str(out),
         "eval": {"datasets": [{"name": "arith", "split": "test"}], "limit": 1, "max_new_tokens": 1}},
        echo=lambda _: None)
    expected = pattern.replace("<name>", "arith").replace("<split>", "test")
    settings = expected.replace(".jsonl", ".settings.json")  # what resuming checks against
    assert sorted(str(p.relative_to(out)) for p in (out / "eval").iterdir()) == [expected, settings]


def test_readme_says_how_builtins_and_third_party_plugins_are_found():
    from importlib import metadata

    from lladapt.components import plugin_manager

    readme = " ".join((DOCS.parent / "README.md").read_text().split())
    # the built-ins are a list in code, not entry points of lladapt's own distribution
    own = [ep for ep in metadata.entry_points(group="lladapt") if ep.dist and ep.dist.name == "lladapt"]
    assert own == [] and plugin_manager.BUILTIN_PLUGINS
    assert "listed in code (`lladapt.components.plugin_manager.BUILTIN_PLUGINS`)" in readme
    assert "would be (entry-point group `lladapt`)" not in readme
    assert "third-party plugins register through the entry-point group `lladapt`" in readme


def test_plugins_page_states_each_optional_adapter_method_and_walks_through_the_example():
    import lladapt

    text = (DOCS / "plugins.md").read_text()
    for method in ("merge", "unmerge", "detach", "share", "to_peft", "from_peft", "sites_from_peft"):
        assert f"**`{method}(" in text, f"the contract of Adapter.{method} is missing"
    for attribute in ("site_kind", "modes", "default_mode(role)", "block_position",
                      "default_placement", "default_learning_rate", "peft_type"):
        assert f"| `{attribute}` |" in text, attribute
    assert f"| `\"{lladapt.Adapter.block_position}\"` |" in text  # the documented default
    example = DOCS.parent / "examples" / "lladapt-ia3"
    for path in example.rglob("*.py"):
        assert f"lladapt_ia3/{path.name}" in text, path


def test_every_sweep_file_field_is_documented():
    from lladapt.sweep.spec import Budget, Resources, SweepFile

    page = (DOCS / "sweeps.md").read_text()
    for prefix, model in (("", SweepFile), ("budget.", Budget), ("", Resources)):
        for name in model.model_fields:
            assert f"{prefix}{name}" in page or f"`{name}`" in page, f"{prefix}{name} is not in docs/sweeps.md"
