"""Components built outside ``load_config`` (plain ``{"name": ..., **fields}`` mappings) validate
their fields the same way, with errors under the section they came from; a section that
``load_config`` resolved keeps its validated Config."""

from __future__ import annotations

import pytest

from lladapt import ConfigError, load_config
from lladapt.adapters.build import build_adapter, build_placement
from lladapt.data.loading import build_dataset


@pytest.mark.parametrize(("build", "section", "message"), [
    (build_adapter, {"name": "lora", "r": 0}, "adapter.r: must be greater than 0 (got 0)"),
    (build_adapter, {"name": "lora", "rank": 4}, "adapter.rank: unknown key. Known keys: r, alpha"),
    (build_placement, {"name": "modules", "modules": []}, "placement.modules: "),
    (build_dataset, {"name": "arith", "train_sise": 5}, "arith.train_sise: unknown key; did you mean 'train_size'?"),
])
def test_fields_of_a_plain_mapping_are_validated_under_its_section(build, section, message):
    with pytest.raises(ConfigError) as err:
        build(section)
    assert message in str(err.value)


def test_a_resolved_section_keeps_its_validated_config():
    config = load_config({"model": "llama-7b", "adapter": {"name": "lora", "r": 4},
                          "data": {"train": [{"name": "arith", "train_size": 7}]}})
    assert build_adapter(config.adapter).config is config.adapter.options
    assert build_dataset(config.data.train[0]).config is config.data.train[0].options
    assert len(build_dataset(config.data.train[0]).load("train")) == 7
