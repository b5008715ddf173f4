"""Start-up time of the command line: wall time of ``lladapt --help``, ``lladapt plugins`` and
``lladapt validate`` (a config with a field error, which needs no torch, and a valid paper config,
whose adapter is placed on the meta device and so needs torch), a fresh process each run, the
output discarded; median and spread over ``--runs``. Each command is also run once under
``python -X importtime`` to record whether it imported torch.

    .venv/bin/python benchmarks/startup.py --runs 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VALID = ROOT / "docs" / "examples" / "paper-v1" / "llama-7b-lora.yaml"


def commands(invalid: Path) -> dict[str, tuple[str, ...]]:
    return {
        "lladapt --help": ("--help",),
        "lladapt plugins": ("plugins",),
        "lladapt validate (field error)": ("validate", str(invalid)),
        "lladapt validate (valid, meta device)": ("validate", str(VALID)),
    }


def time_command(exe: str, args: tuple[str, ...], runs: int) -> dict[str, float]:
    subprocess.run([exe, *args], capture_output=True)  # warm the file cache
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([exe, *args], capture_output=True)
        seconds.append(time.perf_counter() - started)
    return {"median": round(statistics.median(seconds), 3), "min": round(min(seconds), 3),
            "max": round(max(seconds), 3)}


def imports_torch(args: tuple[str, ...]) -> bool:
    """Whether the command imports torch (``-X importtime`` lists every module imported)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "lladapt", *args],
                          capture_output=True, text=True)
    return any(line.split("|")[-1].strip() == "torch" for line in done.stderr.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    exe = str(Path(sys.executable).with_name("lladapt"))
    if not Path(exe).exists():
        exe = shutil.which("lladapt") or sys.exit("lladapt is not installed beside this Python")
    with tempfile.TemporaryDirectory() as tmp:
        invalid = Path(tmp) / "invalid.yaml"
        invalid.write_text("model: llama-7b\nadapter: {name: lora, r: -1}\n")
        result = {
            name: {**time_command(exe, cmd, args.runs), "imports_torch": imports_torch(cmd)}
            for name, cmd in commands(invalid).items()
        }
    print(json.dumps({"runs": args.runs, "seconds": result}, indent=1))


if __name__ == "__main__":
    main()
