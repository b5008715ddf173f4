"""The paper's configurations as files (docs/examples): ``lladapt params`` reproduces the exact
trainable-parameter counts of Table 1 (arXiv v1) and of the EMNLP version, without weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lladapt.cli import cli

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"

EXPECTED = {
    # Table 1 of arXiv 2304.01933v1: LoRA r=8, S-AdapterH b=256, S-AdapterP b=768, P-Adapter b=256
    "paper-v1/llama-7b-lora.yaml": 4_194_304,
    "paper-v1/llama-7b-series-h.yaml": 201_326_592,
    "paper-v1/llama-7b-series-p.yaml": 201_326_592,
    "paper-v1/llama-7b-parallel.yaml": 201_326_592,
    "paper-v1/bloom-7b1-lora.yaml": 3_932_160,
    "paper-v1/bloom-7b1-series-h.yaml": 125_829_120,
    "paper-v1/bloom-7b1-series-p.yaml": 188_743_680,
    "paper-v1/bloom-7b1-parallel.yaml": 125_829_120,
    "paper-v1/gpt-j-6b-lora.yaml": 3_670_016,
    "paper-v1/gpt-j-6b-series-h.yaml": 117_440_512,
    "paper-v1/gpt-j-6b-series-p.yaml": 176_160_768,
    "paper-v1/gpt-j-6b-parallel.yaml": 176_160_768,
    # EMNLP 2023, LLaMA-7B best placements: 0.83%, 0.99%, 3.54% of base + adapter
    "paper-emnlp/llama-7b-lora.yaml": 56_098_816,
    "paper-emnlp/llama-7b-series.yaml": 67_108_864,
    "paper-emnlp/llama-7b-parallel.yaml": 247_463_936,
}


def _params(path: Path) -> dict:
    result = CliRunner().invoke(cli, ["params", "--json", str(path)])
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


def test_every_example_is_listed():
    files = {str(p.relative_to(EXAMPLES)) for p in EXAMPLES.glob("paper-*/*.yaml")}
    assert files == set(EXPECTED) | {"paper-emnlp/llama-7b-prefix.yaml"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_paper_configuration_counts(name):
    counts = _params(EXAMPLES / name)
    assert counts["trainable"] == EXPECTED[name]
    assert counts["total"] == counts["base"] + counts["trainable"]


def test_emnlp_shares_match_the_paper():
    shares = {k: round(_params(EXAMPLES / f"paper-emnlp/llama-7b-{k}.yaml")["trainable_percent"], 2)
              for k in ("lora", "series", "parallel")}
    assert shares == {"lora": 0.83, "series": 0.99, "parallel": 3.54}


def test_emnlp_prefix_configuration():
    counts = _params(EXAMPLES / "paper-emnlp/llama-7b-prefix.yaml")
    # 10 virtual tokens, a key and a value prefix of width 4096 in each of the 32 layers
    assert counts["adapter"] == "prefix" and counts["trainable"] == 10 * 32 * 2 * 4096
