"""Start-up time of the command line: wall time of ``lladapt --help`` and ``lladapt plugins``
(a fresh process each run, the output discarded), median and spread over ``--runs``.

    .venv/bin/python benchmarks/startup.py --runs 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (("--help",), ("plugins",))


def time_command(exe: str, args: tuple[str, ...], runs: int) -> dict[str, float]:
    subprocess.run([exe, *args], capture_output=True, check=True)  # warm the file cache
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([exe, *args], capture_output=True, check=True)
        seconds.append(time.perf_counter() - started)
    return {"median": round(statistics.median(seconds), 3), "min": round(min(seconds), 3),
            "max": round(max(seconds), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    exe = str(Path(sys.executable).with_name("lladapt"))
    if not Path(exe).exists():
        exe = shutil.which("lladapt") or sys.exit("lladapt is not installed beside this Python")
    result = {"lladapt " + " ".join(c): time_command(exe, c, args.runs) for c in COMMANDS}
    print(json.dumps({"runs": args.runs, "seconds": result}, indent=1))


if __name__ == "__main__":
    main()
