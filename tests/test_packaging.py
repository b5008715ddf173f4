"""The packaging trap: a subpackage missing from pyproject's `packages` still imports in editable
mode but is left out of the wheel. Build the wheel and import every module from it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from plugin_env import build_wheel

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"core": "lladapt", "plugins": "lladapt.plugins", "registry": "lladapt.registry"}


def source_modules() -> set[str]:
    """Every module of the source tree, by its import name."""
    names = set()
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.add(".".join([package, *parts]))
    return names


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(ROOT, out)
    unpacked = out / "unpacked"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(unpacked)
    return unpacked


def test_every_module_is_in_the_wheel(wheel_dir):
    in_wheel = set()
    for path in wheel_dir.joinpath("lladapt").rglob("*.py"):
        parts = path.relative_to(wheel_dir).with_suffix("").parts
        in_wheel.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    missing = source_modules() - in_wheel
    assert not missing, f"modules left out of the wheel (add their packages to pyproject): {missing}"


def test_every_module_imports_from_the_wheel(wheel_dir):
    modules = sorted(m for m in source_modules() if not m.endswith("__main__"))
    script = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(wheel_dir)!r})\n"
        "import lladapt\n"
        f"assert lladapt.__file__.startswith({str(wheel_dir)!r}), lladapt.__file__\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print('imported', len(sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    entry_points = next(wheel_dir.glob("lladapt-*.dist-info")) / "entry_points.txt"
    assert "lladapt = lladapt.cli:main" in entry_points.read_text()
