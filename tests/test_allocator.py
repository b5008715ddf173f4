"""A CPU run keeps the memory it frees for its next allocations (``lladapt.training.allocator``).

The allocator's thresholds are process-wide, so what they do is measured in a fresh interpreter
each time, with glibc's own ``MALLOC_*`` variables taken out of its environment."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import pytest

from lladapt.training import allocator, loop
from tests.training_support import random_examples, tiny_trainable

pytestmark = pytest.mark.skipif(not allocator.supported(), reason="the allocator settings need Linux with glibc")

# Allocates 200 MiB in 10 MiB tensors and frees them, three rounds, as a step's activations come
# and go. Reports the page faults of the last two rounds, the resident memory (MiB) the last free
# gave back, and what the end of the block gave back.
_PROBE = """
import json, resource, sys, torch
from lladapt.training.allocator import kept_freed_memory

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

with kept_freed_memory(sys.argv[1] == "kept") as kept:
    for round in range(3):
        if round == 1:
            start = faults()
        blocks = [torch.ones(10 << 18) for _ in range(20)]
        held = rss()
        del blocks
    freed = held - rss()
    later_faults = faults() - start
print(json.dumps({"kept": kept, "faults": later_faults, "freed": freed, "after": held - rss()}))
"""


def _probe(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, env=env,
                          timeout=120, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def test_freed_memory_is_kept_for_the_next_allocations_then_handed_back():
    system, kept = _probe("system"), _probe("kept")
    # glibc's own thresholds: frees hand the blocks back (most of them: how many depends on where
    # its adaptive thresholds stand), and a later round faults them in again
    assert not system["kept"] and system["faults"] > 40_000, system
    # kept: the later rounds reuse the pages of the first, which stay until the block ends. A
    # round allocates 51,200 pages; where the heap puts a block can still leave one or two of the
    # 20 blocks on fresh pages (2,560 faults each: seen 2,560 here and 5,120 on CI's machine)
    assert kept["kept"] and kept["freed"] < 20 and kept["faults"] < 10_000, kept
    assert kept["after"] > 150, kept


def test_inactive_it_changes_nothing(monkeypatch):
    monkeypatch.setattr(allocator, "_libc", lambda: pytest.fail("the C library was touched"))
    with allocator.kept_freed_memory(False) as kept:
        assert kept is False


@pytest.mark.parametrize("keep", [True, False])
def test_a_cpu_run_keeps_freed_memory_unless_told_not_to_and_hands_it_back_last(keep, monkeypatch):
    from lladapt.config import TrainSection
    from lladapt.training import train

    events = []

    @contextlib.contextmanager
    def recorded(name, real, *args):
        events.append(f"{name} {args}")
        with real(*args):
            yield
        events.append(f"{name} done")

    real_keep, real_held = loop.kept_freed_memory, loop.held_chunk_buffers
    monkeypatch.setattr(loop, "kept_freed_memory", lambda active: recorded("keep", real_keep, active))
    monkeypatch.setattr(loop, "held_chunk_buffers", lambda: recorded("held", real_held))
    settings = TrainSection(max_steps=1, batch_size=2, micro_batch_size=2, precision="fp32", progress="none",
                            save_steps=0, warmup_steps=0, keep_freed_memory=keep)
    train(tiny_trainable(), random_examples(4), settings, learning_rate=1e-3, pad_token_id=0, echo=lambda _: None)
    # the settings come first and their trim last, after the run's buffers are let go
    assert events == [f"keep ({keep},)", "held ()", "held done", "keep done"]


def test_the_probe_runs_the_module_of_this_checkout():
    done = subprocess.run([sys.executable, "-c", "import lladapt.training.allocator as a; print(a.__file__)"],
                          capture_output=True, text=True, check=True)
    assert os.path.samefile(done.stdout.strip(), allocator.__file__)
