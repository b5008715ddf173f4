"""Puts example plugin distributions on sys.path as real ``*.dist-info`` folders, so that
importlib.metadata finds their ``lladapt`` entry points exactly as for pip-installed packages."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

HERE = Path(__file__).parent / "example_plugin"

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
        info = site / f"{dist.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text(f"[lladapt]\n{ep_name} = {module}\n")
        (info / "top_level.txt").write_text(module + "\n")
    return site


def env_with(site: Path, **extra: str) -> dict[str, str]:
    """The environment for a subprocess that sees the plugins in ``site``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env
