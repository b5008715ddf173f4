"""Puts example plugin distributions on sys.path as real ``*.dist-info`` folders, so that
importlib.metadata finds their ``lladapt`` entry points exactly as for pip-installed packages.

Two ways: :func:`install` writes the small test fixtures of ``tests/example_plugin`` (module +
hand-written dist-info); :func:`install_wheel` builds a real distribution (the worked example
``examples/lladapt-ia3``) with pip and unpacks its wheel, which is what ``pip install`` does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).parent / "example_plugin"
ROOT = Path(__file__).resolve().parents[1]
#: the worked example plugin distribution that docs/plugins.md walks through.
IA3_PROJECT = ROOT / "examples" / "lladapt-ia3"

PLUGINS = {
    # distribution name: (entry-point name, module folder, module source root)
    "lladapt-example": ("example", "lladapt_example", HERE),
    "lladapt-broken": ("broken", "lladapt_broken", HERE / "broken_plugin"),
}


def install(site: Path, names=tuple(PLUGINS)) -> Path:
    """Write each named distribution (module + dist-info with entry points) into ``site``."""
    site.mkdir(parents=True, exist_ok=True)
    for dist in names:
        ep_name, module, root = PLUGINS[dist]
        shutil.copytree(root / module, site / module, dirs_exist_ok=True)
        write_dist_info(site, dist, ep_name, module)
    return site


def write_dist_info(site: Path, dist: str, ep_name: str, module: str, version: str = "0.1.0") -> Path:
    """The ``*.dist-info`` of a distribution whose ``lladapt`` entry point ``ep_name`` is
    ``module`` (a module already in ``site``)."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[lladapt]\n{ep_name} = {module}\n")
    (info / "top_level.txt").write_text(module + "\n")
    return info


def build_wheel(project: Path, out: Path) -> Path:
    """Build ``project``'s wheel into ``out`` with pip (no download, no build isolation)."""
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(project)],
        capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"building the wheel of {project} failed:\n{proc.stdout}{proc.stderr}")
    [wheel] = out.glob("*.whl")
    return wheel


def install_wheel(project: Path, site: Path) -> Path:
    """Build ``project``'s wheel (from a copy: setuptools writes build/ and egg-info beside the
    sources) and unpack it into ``site`` (package + ``*.dist-info``)."""
    source = site.parent / f"{site.name}-src"
    shutil.copytree(project, source, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))
    wheel = build_wheel(source, site.parent / f"{site.name}-wheel")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return site


def env_with(site: Path, **extra: str) -> dict[str, str]:
    """The environment for a subprocess that sees the plugins in ``site``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env
