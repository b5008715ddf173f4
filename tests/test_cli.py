"""The CLI's cheap paths: help, the plugin list and a config's field errors without torch,
version."""

from __future__ import annotations

import json
import subprocess
import sys

WITHOUT_TORCH = """
import sys
from lladapt.cli import main
try:
    main({argv!r})
except SystemExit as exc:
    assert exc.code == {code}, exc.code
heavy = sorted(m for m in ("torch", "transformers", "accelerate", "safetensors") if m in sys.modules)
print("HEAVY:", ",".join(heavy))
"""


def _without_torch(argv: list[str], code: int = 0) -> str:
    """Run the CLI with ``argv`` in a fresh interpreter; its output, after checking that it exited
    with ``code`` and imported no heavy library."""
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH.format(argv=argv, code=code)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("HEAVY:"), proc.stdout.strip().splitlines()[-1]
    return proc.stdout + proc.stderr


def test_help_does_not_import_torch():
    out = _without_torch(["--help"])
    assert "Commands:" in out
    for command in ("plugins", "validate", "params", "data"):
        assert f"  {command} " in out


def test_listing_the_plugins_does_not_import_torch():
    """Every built-in component (the adapters included) is described without torch: the
    adapters import their torch modules only when attached."""
    out = _without_torch(["plugins", "--json"])
    names = {c["name"] for c in json.loads(out[: out.rindex("HEAVY:")])["components"]}
    assert {"lora", "series", "parallel", "prefix", "prompt", "ptuning", "llama", "gsm8k"} <= names


def test_a_config_with_field_errors_is_refused_without_torch(tmp_path):
    """``lladapt validate`` needs torch only to place the adapter on the meta device, which it
    does once every field is valid."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: llama-7b\nadapter: {name: lora, r: -1}\n")
    out = _without_torch(["validate", str(bad)], code=2)
    assert "adapter.r: must be greater than 0 (got -1)" in out


def test_version():
    from click.testing import CliRunner

    from lladapt import __version__
    from lladapt.cli import cli

    result = CliRunner().invoke(cli, ["--version"])
    assert result.output.strip() == f"lladapt, version {__version__}"
