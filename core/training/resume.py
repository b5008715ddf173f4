"""Exact resume, the loop's side: which of the loop's state goes into a checkpoint, and how a run
picks it up again. The files themselves (written atomically, RNG states, the newest complete
checkpoint) are :mod:`.checkpoints`.

Besides the tensors, a checkpoint keeps the data position and this epoch's batch order, the loss
history, the best validation loss, the token counts and the open logging window, so that a
resumed run logs, validates and ends exactly as the uninterrupted one would.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lladapt.common.errors import LladaptError
from lladapt.common.processes import processes
from lladapt.training import checkpoints as ckpt
from lladapt.training.state import LoopState


def restore(run: LoopState, directory: Path, echo: Callable[[str], None]) -> ckpt.Checkpoint | None:
    """Load the newest complete checkpoint in ``directory`` into ``run`` (tensors, optimizer,
    scheduler, data position, history, then the RNG states last) and return it; None, and a
    message, when there is none: the run starts from step 1."""
    report = echo if run.main else lambda _: None
    found = ckpt.latest_checkpoint(directory, report)
    if found is None:
        ckpt.remove_leftovers(directory, report)
        echo(f"no complete checkpoint in {directory}: starting from step 1")
        return None
    state, result = found.state, run.result
    plan_record = run.plan.record(run.world)
    if state.get("plan") != plan_record:
        raise LladaptError(f"cannot resume from {found.path}: it was written for {state.get('plan')}, this run is {plan_record}")
    ckpt.remove_leftovers(directory, report)  # the resume goes ahead (a refused one changes nothing)
    ckpt.load_trainable(run.model, found.trainable)
    run.optimizer.load_state_dict(found.optimizer["optimizer"])
    run.precision.load_state_dict(found.optimizer["scaler"])
    run.scheduler.load_state_dict(found.scheduler)
    run.batches.orders = {int(k): v for k, v in state["orders"].items()}
    result.losses = [tuple(x) for x in state["losses"]]
    result.val_losses = [tuple(x) for x in state["val_losses"]]
    result.best_step, run.best_val = state["best_step"], state["best_val"] or math.inf
    run.tokens_seen, run.real_total, run.padded_total = state["tokens"], state["real"], state["padded"]
    run.best = found.best
    run.start_step = found.step + 1
    result.resumed_from = found.step
    run.last_checkpoint = found.path
    ckpt.set_rng_state(ckpt.rank_rng_state(found.rng, run.accelerator.process_index, run.world))
    echo(f"resuming from {found.path} (step {found.step} of {run.steps})")
    return found


def write_checkpoint(run: LoopState, step: int) -> Path | None:
    """The main process writes the checkpoint of ``step``; every process waits for it. Returns
    its path (on every process), None without a checkpoint folder."""
    path = None
    rng = None
    if run.world > 1 and run.checkpoint_dir is not None:  # every process's, gathered to the main one
        rng = {"ranks": processes().gather(ckpt.rng_state())}
    if run.main and run.checkpoint_dir is not None:
        path = ckpt.save_checkpoint(run.checkpoint_dir, step, model=run.model, optimizer=run.optimizer,
                                    scaler=run.precision, scheduler=run.scheduler,
                                    state=_loop_state(run, step), save_adapter=run.save_adapter,
                                    best=run.best, keep=run.settings.save_total_limit, rng=rng)
        run.result.checkpoints.append(path)
    run.accelerator.wait_for_everyone()
    return path or (run.checkpoint_dir / f"step-{step}" if run.checkpoint_dir else None)


def _loop_state(run: LoopState, step: int) -> dict[str, Any]:
    """The checkpoint's ``trainer_state.json`` (less the step, which it adds)."""
    plan, result = run.plan, run.result
    done = plan.micro_batches(step).stop
    epoch = (done - 1) // plan.per_epoch
    window = run.window
    return {
        "plan": plan.record(run.world), "micro_batches_done": done,
        "orders": {str(epoch): run.batches.order(epoch)}, "losses": result.losses,
        "val_losses": result.val_losses, "best_step": result.best_step,
        "best_val": None if math.isinf(run.best_val) else run.best_val, "tokens": run.tokens_seen,
        "real": run.real_total, "padded": run.padded_total, "config": dict(run.run_config or {}),
        "window": [window.loss, window.tokens, window.real, window.padded],
        "seconds": time.perf_counter() - run.started,
    }
