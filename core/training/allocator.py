"""Keep the memory a CPU run frees for its next allocations (``train.keep_freed_memory``).

Why (issue 20, a bf16 LoRA step on SmolLM2-135M, 2 CPU cores): torch allocates CPU tensors with
glibc's ``malloc``, whose adaptive thresholds hand large freed blocks back to the system: a
block above the mmap threshold is unmapped when freed, and the top of the heap is trimmed once
twice that much lies free there. A training step frees and allocates the same activations over
and over, so fresh zero-filled pages came back one 4 KiB page fault at a time: 30,000-150,000
faults a step. Inside the run, the up projection's LoRA product ``h @ B^T`` (4 x 256 x 32 by
32 x 1,536, bf16) took 0.88 ms with 768 faults a call and 0.47 ms on reused memory.

Fixing the thresholds (``mallopt``: blocks up to 32 MiB, glibc's largest mmap threshold, come
from the heap; the heap is trimmed only when 1 GiB lies free at its top) ends that once the
heap has grown to the run's working set: the steps after the first few fault a few hundred
pages. The peak is not raised: the memory kept is what the step used anyway. At the end of the
run ``malloc_trim`` hands the free memory back (the training loop enters this context first,
so it also hands back what the run's other contexts free on their way out). glibc cannot go back
to its adaptive thresholds, so the fixed ones stay for the rest of the process;
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` in the environment are the same
settings for a whole process.

Only on Linux with glibc, and only for a run on the CPU; elsewhere nothing changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
from collections.abc import Iterator

__all__ = ["kept_freed_memory", "supported"]

#: ``mallopt``'s parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: glibc's largest mmap threshold (``HEAP_MAX_SIZE / 2`` on 64-bit); larger values are refused.
MMAP_THRESHOLD = 32 << 20
#: free memory at the heap's top before it is trimmed (``mallopt`` takes a C ``int``).
TRIM_THRESHOLD = 1 << 30


def _libc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc, else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # pragma: no cover - glibc without the usual soname
        return None


def supported() -> bool:
    """Whether this process's allocator can be told to keep freed memory (Linux, glibc)."""
    return _libc() is not None


@contextlib.contextmanager
def kept_freed_memory(active: bool = True) -> Iterator[bool]:
    """Within the block, large freed blocks stay with the process (see the module's docstring);
    afterwards the free memory is handed back. Yields whether the thresholds were set."""
    libc = _libc() if active else None
    if libc is None:
        yield False
        return
    # mallopt returns 1 on success. The trim threshold only once the mmap one is taken: setting
    # any threshold turns off glibc's adaptive mmap threshold, so a trim threshold alone would map
    # every block above 128 KiB afresh, worse than no setting (docs/benchmarks.md)
    kept = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    try:
        yield kept
    finally:
        libc.malloc_trim(0)
