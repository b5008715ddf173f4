"""The stages' import contract (``[tool.importlinter]`` in pyproject.toml), checked by
import-linter on the package as it installs: ``core/``, ``plugins/`` and ``registry/`` laid out
as the one ``lladapt`` tree the wheel holds (import-linter reads folders, and the editable
install maps three of them into one namespace). Each contract is also broken on purpose in a copy,
to show that the check would catch it and names the modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The installed tree: each folder of ``package-dir`` copied where its package lives."""
    if not LINT.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    tree = tmp_path_factory.mktemp("installed")
    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(folders.items()):  # "lladapt" first, then the mapped subpackages
        shutil.copytree(ROOT / folder, tree.joinpath(*package.split(".")),
                        ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}, capture_output=True,
        text=True, timeout=300,
    )


def broken_copy(staged: Path, tmp_path: Path, module: str, code: str) -> Path:
    """A copy of the staged tree with ``code`` appended to ``module`` (a dotted name)."""
    tree = tmp_path / "tree"
    shutil.copytree(staged, tree)
    path = tree.joinpath(*module.split(".")).with_suffix(".py")
    path.write_text(path.read_text() + "\n\n" + code + "\n")
    return tree


def test_every_contract_is_kept(staged: Path) -> None:
    done = lint(staged)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 3 kept, 0 broken." in done.stdout


@pytest.mark.parametrize(("module", "imports", "broken"), [
    pytest.param(  # upward, and lazily: an import inside a function counts as one at the top
        "lladapt.models.source", "from lladapt.training import train",
        ["Stages import only downward, in the order data flows BROKEN",
         "lladapt.models is not allowed to import lladapt.training",
         "lladapt.models.source -> lladapt.training"], id="upward"),
    pytest.param(  # files.py is below model.py in the adapters stage: model imports files only
        "lladapt.adapters.files", "from lladapt.adapters.model import attach",
        ["No import circles, inside a stage or between stages BROKEN",
         "No cycles are allowed in lladapt.adapters."], id="circle"),
    pytest.param(
        "lladapt.training.schedule", "from lladapt.plugins.adapters import lora",
        ["The core never imports a built-in plugin",
         "lladapt.training.schedule -> lladapt.plugins.adapters.lora"], id="plugin"),
])
def test_an_import_against_a_contract_breaks_it_naming_the_modules(
    staged: Path, tmp_path: Path, module: str, imports: str, broken: list[str]
) -> None:
    tree = broken_copy(staged, tmp_path, module, f"def _against_the_contract():\n    {imports}")
    done = lint(tree)
    assert done.returncode == 1
    for line in broken:
        assert line in done.stdout


def test_a_new_stage_package_must_be_given_a_layer(staged: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(staged, tree)
    (tree / "lladapt" / "unplaced").mkdir()
    (tree / "lladapt" / "unplaced" / "__init__.py").write_text('"""A stage nobody placed."""\n')
    done = lint(tree)
    assert done.returncode == 1
    assert "lladapt.unplaced" in done.stdout
