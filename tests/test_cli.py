"""The CLI's cheap paths: help without torch, version."""

from __future__ import annotations

import subprocess
import sys

HELP_WITHOUT_TORCH = """
import sys
from lladapt.cli import main
try:
    main(["--help"])
except SystemExit as exc:
    assert exc.code == 0, exc.code
heavy = sorted(m for m in ("torch", "transformers", "accelerate", "safetensors") if m in sys.modules)
print("HEAVY:", ",".join(heavy))
"""


def test_help_does_not_import_torch():
    proc = subprocess.run(
        [sys.executable, "-c", HELP_WITHOUT_TORCH], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "Commands:" in proc.stdout
    for command in ("plugins", "validate", "params", "data"):
        assert f"  {command} " in proc.stdout
    assert proc.stdout.strip().endswith("HEAVY:")


def test_version():
    from click.testing import CliRunner

    from lladapt import __version__
    from lladapt.cli import cli

    result = CliRunner().invoke(cli, ["--version"])
    assert result.output.strip() == f"lladapt, version {__version__}"
