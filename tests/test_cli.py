"""The CLI's cheap paths: help and the plugin list without torch, version."""

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
    assert exc.code == 0, exc.code
heavy = sorted(m for m in ("torch", "transformers", "accelerate", "safetensors") if m in sys.modules)
print("HEAVY:", ",".join(heavy))
"""


def _without_torch(argv: list[str]) -> str:
    """Run the CLI with ``argv`` in a fresh interpreter; its output, after checking that no heavy
    library was imported."""
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH.format(argv=argv)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("HEAVY:"), proc.stdout.strip().splitlines()[-1]
    return proc.stdout


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


def test_version():
    from click.testing import CliRunner

    from lladapt import __version__
    from lladapt.cli import cli

    result = CliRunner().invoke(cli, ["--version"])
    assert result.output.strip() == f"lladapt, version {__version__}"
