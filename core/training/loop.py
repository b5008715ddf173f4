"""The training loop: AdamW over the adapter's parameters, a learning-rate schedule, gradient
accumulation (batch = micro batch x accumulation x processes, the paper's 16 = 4 x 4), mixed
precision on a GPU through accelerate, exact-resume checkpoints, validation loss, guards.

Each optimizer step takes the next ``batch_size / micro_batch_size`` micro-batches from a stream
that runs through the epochs in a seeded order (:mod:`.plan`); ``epochs: 3`` is exactly three
passes, the last step shorter when the micro-batches do not divide evenly, and the loss of every
step is normalised by its own label tokens (:mod:`.loss`), so a short step is not scaled down.

Processes (``accelerate launch``) share each step's micro-batches round-robin and all-reduce the
gradients once per step. The model is not wrapped in DistributedDataParallel: a step can hold
fewer micro-batches than processes, and one explicit reduction per step can neither hang nor
double-scale there.

``train`` runs its steps in order: prepare (:mod:`.prepare`), restore a checkpoint on resume
(:mod:`.resume`), then for each step the optimizer step, its log record, the validation loss
(:mod:`.validation`), a checkpoint or a stop on a signal; at the end, finish. The steps
share one :class:`~lladapt.training.state.LoopState` (:mod:`.state`) instead of closures.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lladapt.config import TrainSection
from lladapt.data.tokenization import Encoded, collate_for_training
from lladapt.training import checkpoints as ckpt
from lladapt.training.allocator import kept_freed_memory
from lladapt.training.compiling import compile_and_warm_up, wants_compile
from lladapt.training.guards import StopSignals, check_finite, interrupted
from lladapt.training.loss import (
    chunked_summed_loss,
    held_chunk_buffers,
    label_tokens,
    scale,
    summed_loss,
)
from lladapt.training.plan import Plan, make_plan, total_steps
from lladapt.training.precision import Precision
from lladapt.training.prepare import prepare
from lladapt.training.progress import Progress, trim_metrics
from lladapt.training.resume import restore, write_checkpoint
from lladapt.training.rotary import rotary_in_one_pass
from lladapt.training.sharding import unshard_for_inference
from lladapt.training.state import LoopState, TrainResult, Window
from lladapt.training.trackers import Tracking
from lladapt.training.validation import validation_loss

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Plan", "TrainResult", "backward_step", "make_plan", "total_steps", "train"]

Echo = Callable[[str], None]


def train(
    model: torch.nn.Module,
    encoded: Sequence[Encoded],
    settings: TrainSection,
    *,
    learning_rate: float,
    pad_token_id: int,
    save: Callable[[Path], None] | None = None,
    checkpoint_dir: Path | None = None,
    metrics: Path | None = None,
    echo: Echo = print,
    val_encoded: Sequence[Encoded] = (),
    resume: bool = False,
    run_config: Mapping[str, Any] | None = None,
    tracker_dir: Path | None = None,
) -> TrainResult:
    """Train the trainable parameters of ``model`` on ``encoded`` examples.

    ``save(path)`` writes the adapter (into each checkpoint under ``checkpoint_dir``);
    ``metrics`` receives one JSON line per logging step; ``resume`` continues from the newest
    complete checkpoint in ``checkpoint_dir``; ``tracker_dir`` holds local trackers' files
    (``settings.report_to``).
    """
    run = prepare(model, encoded, settings, learning_rate=learning_rate, pad_token_id=pad_token_id,
                  val_encoded=val_encoded, save=save, checkpoint_dir=checkpoint_dir,
                  run_config=run_config, tracker_dir=tracker_dir)
    found = restore(run, checkpoint_dir, echo) if resume and checkpoint_dir is not None else None
    if resume and run.main and metrics is not None:
        trim_metrics(metrics, run.start_step - 1)  # the steps after the checkpoint are logged again
    model.train()
    run.start_clock(found.state if found is not None else None)
    # a sharded base is gathered in bf16 by FSDP; else (CPU bf16) the frozen weights run in bf16
    run.frozen = run.precision.frozen_weights_cast(run.model)
    compiling = wants_compile(settings.compile, run.accelerator.device, run.model, run.sharded)
    # the allocator's settings outermost: its final trim hands back what the other contexts free
    with (kept_freed_memory(settings.keep_freed_memory and run.accelerator.device.type == "cpu"),
          run.frozen if not run.sharded else contextlib.nullcontext(), run.precision.attention(run.model),
          run.precision.packed_linears(run.model, active=not (run.sharded or compiling)), held_chunk_buffers(),
          rotary_in_one_pass(run.model, active=run.accelerator.device.type == "cpu" and not compiling)):
        if compiling:
            # compiled on the weights' dtype and the attention the steps run: else dynamo traces
            # every region again at the first step
            run.result.compile_seconds = _compile(run)
            echo(f"compiled the model in {run.result.compile_seconds:.1f} s (train.compile)")
            run.start_clock(found.state if found is not None else None)  # compiling is not training
        _steps(run, echo, metrics, run_config)
    return _finish(run)


def _steps(run: LoopState, echo: Echo, metrics: Path | None, run_config: Mapping[str, Any] | None) -> None:
    """The optimizer steps, with their progress, trackers, logging, validation and checkpoints; a
    stop signal ends the run at the next step's checkpoint."""
    settings = run.settings
    with StopSignals() as stop, Progress(
        settings.progress if run.main else "none", run.steps, echo=echo, metrics=metrics if run.main else None
    ) as progress, Tracking(run.accelerator, settings.report_to, run_config) as tracking:
        progress.advance(run.start_step - 1)
        for step in range(run.start_step, run.steps + 1):
            lr, grad_norm = _optimizer_step(run, step)
            progress.advance(step)
            record = _log_record(run, step, lr, grad_norm) | _validate(run, step)
            if record:
                progress.log(record)
                tracking.log(record)
            _checkpoint_or_stop(run, step, stop)


def _compile(run: LoopState) -> float:
    """``torch.compile`` the model, compiled by one pass over the first micro-batch."""
    rows = [run.encoded[i] for i in run.batches[run.plan.micro_batches(run.start_step).start]]

    def one_pass() -> None:
        backward_step(run.model, run.precision, [rows], pad_token_id=run.pad_token_id,
                      pad_to_multiple_of=run.settings.pad_to_multiple_of,
                      normalization=run.settings.loss_normalization)

    return compile_and_warm_up(run.model, run.params, one_pass)


def _optimizer_step(run: LoopState, step: int) -> tuple[float, float]:
    """Forward and backward over the step's micro-batches, the reduction over processes, clipping,
    the guard against a non-finite loss, the optimizer and schedule step; then the step's tokens
    are counted. Returns the learning rate the step used and the gradient norm before clipping."""
    import torch

    settings, precision, optimizer = run.settings, run.precision, run.optimizer
    micro = [run.batches[g] for g in run.plan.micro_batches(step)]
    step_tokens = sum(run.n_labels[i] for idx in micro for i in idx)
    loss_sum = backward_step(
        run.model, precision, [[run.encoded[i] for i in idx] for idx in micro],
        rank=run.accelerator.process_index, world=run.world,
        pad_token_id=run.pad_token_id, pad_to_multiple_of=settings.pad_to_multiple_of,
        normalization=settings.loss_normalization, lockstep=run.sharded,
    )
    if run.world > 1:
        loss_sum = _all_reduce_grads(run.accelerator, run.params, loss_sum)
    precision.unscale(optimizer)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(run.params, settings.max_grad_norm or math.inf))
    step_loss = loss_sum.item() / max(1, step_tokens)
    check_finite(step, step_loss, grad_norm if precision.scaler is None else None, run.last_checkpoint)
    lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
    if precision.step(optimizer):
        run.scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    run.count(micro, loss_sum.item(), step_tokens)
    return lr, grad_norm


def _log_record(run: LoopState, step: int, lr: float, grad_norm: float) -> dict[str, Any]:
    """At a logging step (and the first and last), the record of the logging window, which then
    starts again; else an empty record."""
    if not (step % run.settings.logging_steps == 0 or step in (1, run.steps)):
        return {}
    window, plan = run.window, run.plan
    elapsed = time.perf_counter() - window.started
    mean = window.loss / max(1, window.tokens)
    run.result.losses.append((step, mean))
    record = {"step": step, "epoch": round(plan.micro_batches(step).stop / plan.per_epoch, 4),
              "loss": round(mean, 6), "lr": lr, "grad_norm": round(grad_norm, 6),
              "tokens_per_second": round(window.real / max(elapsed, 1e-9), 1),
              "padded_share": round(1 - window.real / max(1, window.padded), 4),
              "seconds": round(time.perf_counter() - run.started, 2)}
    run.window = Window()
    return record


def _validate(run: LoopState, step: int) -> dict[str, Any]:
    """At an evaluation step (and the last), the validation loss as a record; a new best is kept
    (``keep_best``). Without validation examples, or at another step, an empty record."""
    settings = run.settings
    if not run.val_encoded or not ((settings.eval_steps and step % settings.eval_steps == 0) or step == run.steps):
        return {}
    val = validation_loss(run.model, run.val_encoded, run.precision, micro_batch_size=settings.micro_batch_size,
                          pad_token_id=run.pad_token_id, pad_to_multiple_of=settings.pad_to_multiple_of)
    run.result.val_losses.append((step, val))
    if val < run.best_val:
        run.best_val, run.result.best_step = val, step
        if settings.keep_best:
            run.best = ckpt.trainable_state(run.model)
    return {"step": step, "val_loss": round(val, 6)}


def _checkpoint_or_stop(run: LoopState, step: int, stop: StopSignals) -> None:
    """A checkpoint every ``save_steps`` and when a signal came (none after the last step: the
    run's output follows); then, on a signal, stop, naming the checkpoint to resume from."""
    stopping = _stop_requested(run.accelerator, stop)
    save_steps = run.settings.save_steps
    if step < run.steps and (stopping or (save_steps and step % save_steps == 0)):
        with run.frozen.fp32():  # the caller's save callback sees the model as it was given
            run.last_checkpoint = write_checkpoint(run, step)
    if stopping:
        raise interrupted(stop.name or "a signal", step, run.last_checkpoint or Path("(no checkpoint_dir)"))


def _finish(run: LoopState) -> TrainResult:
    """The best weights back (``keep_best``), the trainable parameters back in the model's dtype
    (what is saved is what ran), eval mode, and the run's totals."""
    if run.settings.keep_best and run.best is not None:
        ckpt.load_trainable(run.model, run.best)
    for p, dtype in zip(run.params, run.dtypes, strict=True):
        p.data = p.data.to(dtype)
    if run.sharded:  # whole again on every process: evaluation runs different passes on each
        unshard_for_inference(run.model)
    run.model.eval()
    result = run.result
    result.steps = run.steps
    result.epochs = run.plan.total / run.plan.per_epoch
    result.seconds = time.perf_counter() - run.started
    result.padded_share = 1 - run.real_total / run.padded_total if run.padded_total else 0.0
    result.real_tokens = run.real_total
    return result


def _stop_requested(accelerator: Any, stop: StopSignals) -> bool:
    """Whether any process received SIGINT/SIGTERM (all stop at the same step)."""
    if accelerator.num_processes == 1:
        return stop.received is not None
    import torch

    flag = torch.tensor([1.0 if stop.received is not None else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


def backward_step(
    model: torch.nn.Module,
    precision: Precision,
    micro_batches: Sequence[Sequence[Encoded]],
    *,
    rank: int = 0,
    world: int = 1,
    pad_token_id: int,
    pad_to_multiple_of: int | None = None,
    normalization: str = "tokens",
    chunked_loss: bool = True,
    lockstep: bool = False,
) -> torch.Tensor:
    """Forward and backward over this process's share (round-robin) of one optimizer step's
    micro-batches; gradients accumulate in ``.grad``. Returns the summed loss of its share.

    With ``chunked_loss`` (where the model allows, see ``hf_compat.bypassed_output_head``) the
    vocabulary logits are computed only at label positions, in chunks (``chunked_summed_loss``).

    With ``normalization="tokens"`` the gradient equals that of one batch holding every
    micro-batch (normalised by the label tokens of the whole step, on every process).

    ``lockstep`` (a sharded base): every process makes as many passes as the busiest one, a
    process short of a micro-batch running the step's last one with weight zero, since each pass
    gathers the sharded weights from all processes."""
    import torch

    step_tokens = sum(label_tokens(e) for rows in micro_batches for e in rows)
    loss_sum = torch.zeros((), device=precision.device)
    mine = micro_batches[rank::world]
    passes = -(-len(micro_batches) // world) if lockstep else len(mine)
    for i in range(passes):
        counts = i < len(mine)
        rows = mine[i] if counts else micro_batches[-1]
        batch = collate_for_training(rows, pad_token_id, pad_to_multiple_of)
        batch = {k: v.to(precision.device) for k, v in batch.items()}
        summed = _summed_loss(model, precision, batch, chunked_loss)
        factor = scale(sum(label_tokens(e) for e in rows), step_tokens, len(micro_batches), normalization)
        precision.backward(summed * (factor if counts else 0.0))
        if counts:
            loss_sum += summed.detach()
    return loss_sum


def _summed_loss(model: torch.nn.Module, precision: Precision, batch: Mapping[str, torch.Tensor],
                 chunked: bool) -> torch.Tensor:
    from lladapt.common.hf_compat import bypassed_output_head

    with bypassed_output_head(model) if chunked else contextlib.nullcontext() as head, precision.autocast():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        if head is not None:
            return chunked_summed_loss(out, head, batch["labels"], cast=precision.frozen_cast)
    return summed_loss(out, batch["labels"])


def _all_reduce_grads(accelerator: Any, params: Sequence[torch.nn.Parameter], loss_sum: torch.Tensor) -> torch.Tensor:
    """Sum the gradients (and the step's summed loss) over processes in one reduction."""
    import torch

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [loss_sum.reshape(1).float()])
    flat = accelerator.reduce(flat, reduction="sum")
    offset = 0
    for p, g in zip(params, grads, strict=True):
        p.grad = flat[offset : offset + g.numel()].view_as(g).to(g.dtype)
        offset += g.numel()
    return flat[-1]
