"""``python -m lladapt.cli.sweep_child PARENT_PID ARGS...``: run ``lladapt ARGS...`` as a child that
does not outlive the process that started it.

A sweep's runs are started by the sweep process, or by a Ray worker that Ray kills when the sweep
ends. Without this, a run whose starter died would go on training, unseen, competing with the
next sweep for the machine. On Linux the kernel is asked to send this process SIGTERM when its
parent dies (``prctl(PR_SET_PDEATHSIG)``), set here rather than in ``preexec_fn``, which is unsafe
in a threaded parent such as a Ray worker. On SIGTERM a run finishes its step, writes a checkpoint
and exits; the next sweep resumes it. If the parent is already gone when this starts, it exits."""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1
#: exit code when the parent died before the child started.
ORPHANED = 3


def tie_to_parent(parent_pid: int) -> bool:
    """Ask for SIGTERM when the parent dies; False if it is already gone (not ``parent_pid``)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    return os.getppid() == parent_pid


def main(argv: list[str]) -> None:
    parent, args = int(argv[0]), argv[1:]
    if not tie_to_parent(parent):
        print(f"lladapt.cli.sweep_child: the process that started this run ({parent}) is gone; not starting",
              file=sys.stderr)
        sys.exit(ORPHANED)
    from lladapt.cli import main as lladapt_main

    lladapt_main(args)


if __name__ == "__main__":
    main(sys.argv[1:])
