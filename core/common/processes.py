"""The processes of a command started by ``accelerate launch`` (or ``torchrun``): which one this
is, how many there are, and the few collective steps the stages need (wait for everyone, gather
objects, hand the main process's object to all). A command started the ordinary way is one
process, and every step here is then a no-op that touches neither accelerate nor torch.distributed.

Files a run shares (its config, results, predictions, the final adapter) are written by the main
process only; the others wait where they must read what it wrote.
"""

from __future__ import annotations

import functools
import os
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["Processes", "leave_together_at_exit", "processes"]


class Processes:
    """This process among the command's processes (one, unless launched with several)."""

    def __init__(self, state: Any = None):
        self._state = state  # accelerate.PartialState when several processes run

    @property
    def rank(self) -> int:
        return self._state.process_index if self._state is not None else 0

    @property
    def world(self) -> int:
        return self._state.num_processes if self._state is not None else 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wait(self) -> None:
        """Wait until every process gets here."""
        if self._state is not None:
            self._state.wait_for_everyone()

    def gather(self, obj: T) -> list[T]:
        """Every process's ``obj``, in process order, on every process."""
        if self._state is None:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def from_main(self, obj: T) -> T:
        """The main process's ``obj`` on every process (the others' are ignored)."""
        if self._state is None:
            return obj
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([obj])[0]


@functools.cache
def processes() -> Processes:
    """The command's processes: several when launched with a ``WORLD_SIZE`` above 1."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    import torch
    from accelerate import PartialState

    # cpu=True is what makes accelerate join the processes over gloo without a GPU (as the
    # trainer's Accelerator does); with a GPU it uses NCCL
    state = PartialState(cpu=not torch.cuda.is_available())
    leave_together_at_exit()
    return Processes(state)


@functools.cache
def leave_together_at_exit() -> None:
    """Leave the process group together when this process exits (registered once per process).
    Left to the C++ destructors at interpreter exit, gloo's process group aborts a process now and
    then ("terminate called without an active exception", exit -6) after a run that finished, and
    the launcher then fails the whole run: 5 of 32 two-process launches without this. Destroying
    the group at exit alone still left 1 of 8 two-process FSDP launches aborting (one process tore
    its connections down while the other was on its way out); with a barrier first, 0 of 32. The
    barrier is gloo's monitored one, with a time limit, in case another process died."""
    import atexit

    atexit.register(_leave_process_group)


def _leave_process_group() -> None:
    import contextlib
    from datetime import timedelta

    import torch.distributed as dist

    if not dist.is_initialized():
        return
    with contextlib.suppress(Exception):  # another process died: leave anyway
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=60))
        else:
            dist.barrier()
    dist.destroy_process_group()
