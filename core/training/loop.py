"""The training loop: AdamW over the adapter's parameters, a learning-rate schedule, gradient
accumulation (batch = micro batch x accumulation x processes, the paper's 16 = 4 x 4), mixed
precision on a GPU through accelerate, exact-resume checkpoints, validation loss, guards.

Each optimizer step takes the next ``batch_size / micro_batch_size`` micro-batches from a stream
that runs through the epochs in a seeded order (:mod:`.sampler`); ``epochs: 3`` is exactly three
passes, the last step shorter when the micro-batches do not divide evenly, and the loss of every
step is normalised by its own label tokens (:mod:`.loss`), so a short step is not scaled down.

Processes (``accelerate launch``) share each step's micro-batches round-robin and all-reduce the
gradients once per step. The model is not wrapped in DistributedDataParallel: a step can hold
fewer micro-batches than processes, and one explicit reduction per step can neither hang nor
double-scale there.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lladapt.common.errors import LladaptError
from lladapt.config import TrainSection
from lladapt.data.tokenization import Encoded, collate_for_training
from lladapt.training import checkpoints as ckpt
from lladapt.training.guards import StopSignals, check_finite, interrupted
from lladapt.training.loss import chunked_summed_loss, label_tokens, scale, summed_loss
from lladapt.training.precision import Precision, mixed_precision
from lladapt.training.progress import Progress, trim_metrics
from lladapt.training.sampler import epoch_batches, padded_width
from lladapt.training.schedule import make_scheduler
from lladapt.training.trackers import Tracking, accelerator_kwargs

if TYPE_CHECKING:  # pragma: no cover
    import torch

Echo = Callable[[str], None]


@dataclass
class TrainResult:
    steps: int
    epochs: float
    #: (step, mean loss per label token over the logging window)
    losses: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    checkpoints: list[Path] = field(default_factory=list)
    #: (step, validation loss)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None
    #: share of padding tokens over every micro-batch trained on
    padded_share: float = 0.0
    #: non-pad tokens over every micro-batch trained on
    real_tokens: int = 0
    resumed_from: int | None = None

    @property
    def first_loss(self) -> float | None:
        return self.losses[0][1] if self.losses else None

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1][1] if self.losses else None


@dataclass(frozen=True)
class Plan:
    """Which micro-batches make up each optimizer step."""

    n_examples: int
    micro_batch_size: int
    #: micro-batches per optimizer step, over all processes
    per_step: int
    #: micro-batches in one epoch
    per_epoch: int
    #: micro-batches in the whole run
    total: int

    @property
    def steps(self) -> int:
        return math.ceil(self.total / self.per_step)

    def micro_batches(self, step: int) -> range:
        """Global indices of the micro-batches of ``step`` (1-based)."""
        return range((step - 1) * self.per_step, min(step * self.per_step, self.total))


def make_plan(n_examples: int, settings: TrainSection) -> Plan:
    per_step = settings.batch_size // settings.micro_batch_size
    per_epoch = math.ceil(n_examples / settings.micro_batch_size)
    total = settings.max_steps * per_step if settings.max_steps else math.ceil(settings.epochs * per_epoch)
    return Plan(n_examples, settings.micro_batch_size, per_step, per_epoch, max(1, total))


def total_steps(n_examples: int, settings: TrainSection) -> int:
    return make_plan(n_examples, settings).steps


class _Batches:
    """The micro-batch stream: global index -> example indices (each epoch's order cached)."""

    def __init__(self, lengths: Sequence[int], plan: Plan, settings: TrainSection) -> None:
        self.lengths, self.plan, self.settings = lengths, plan, settings
        self.orders: dict[int, list[list[int]]] = {}

    def order(self, epoch: int) -> list[list[int]]:
        if epoch not in self.orders:
            self.orders = {epoch: epoch_batches(
                self.lengths, self.plan.micro_batch_size, seed=self.settings.seed, epoch=epoch,
                group_by_length=self.settings.group_by_length,
            )}
        return self.orders[epoch]

    def __getitem__(self, index: int) -> list[int]:
        return self.order(index // self.plan.per_epoch)[index % self.plan.per_epoch]


@dataclass
class _Window:
    """Sums since the last logging step."""

    loss: float = 0.0
    tokens: int = 0
    real: int = 0
    padded: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, loss: float, tokens: int, real: int, padded: int) -> None:
        self.loss += loss
        self.tokens += tokens
        self.real += real
        self.padded += padded


@functools.cache
def _destroy_process_group_at_exit() -> None:
    """Destroy the process group when this process exits (registered once per process). Left to
    the C++ destructors at interpreter exit, gloo's process group aborts a process now and then
    ("terminate called without an active exception", exit -6) after a run that finished, and the
    launcher then fails the whole run."""
    import atexit

    from accelerate import PartialState

    atexit.register(PartialState().destroy_process_group)


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
    import torch
    from accelerate import Accelerator

    if not encoded:
        raise ValueError("no training examples")
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),  # processes, device, reductions, trackers
                              **accelerator_kwargs(settings.report_to, tracker_dir))
    precision = Precision(mixed_precision(settings.precision), accelerator.device)
    world, main = accelerator.num_processes, accelerator.is_main_process
    if world > 1:
        _destroy_process_group_at_exit()
    plan = make_plan(len(encoded), settings)
    if plan.per_step % world:
        raise LladaptError(
            f"train.batch_size / train.micro_batch_size = {plan.per_step} micro-batches per step "
            f"cannot be shared evenly by {world} processes"
        )
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters")
    params = [p for _, p in named]
    dtypes = [p.dtype for p in params]
    if precision.dtype is not None:
        for p in params:  # the optimizer and grad scaler want fp32 master weights
            p.data = p.data.float()
    _place(model, accelerator.device)
    if settings.gradient_checkpointing:
        _enable_gradient_checkpointing(model)

    lengths = [len(e.input_ids) for e in encoded]
    n_labels = [label_tokens(e) for e in encoded]
    batches = _Batches(lengths, plan, settings)
    steps = plan.steps
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=settings.weight_decay)
    scheduler = make_scheduler(settings.lr_scheduler, optimizer, warmup_steps=settings.warmup_steps,
                               total_steps=steps)

    result = TrainResult(steps=0, epochs=0.0)
    plan_record = {"steps": steps, "total_micro_batches": plan.total, "examples": plan.n_examples,
                   "per_step": plan.per_step, "world_size": world}
    best: dict[str, torch.Tensor] | None = None
    best_val = math.inf
    tokens_seen = real_total = padded_total = 0
    start_step = 1
    last_checkpoint: Path | None = None
    if resume and checkpoint_dir is not None:
        found = ckpt.latest_checkpoint(checkpoint_dir, echo if main else lambda _: None)
        if found is None:
            echo(f"no complete checkpoint in {checkpoint_dir}: starting from step 1")
        else:
            state = found.state
            if state.get("plan") != plan_record:
                raise LladaptError(f"cannot resume from {found.path}: it was written for {state.get('plan')}, this run is {plan_record}")
            ckpt.load_trainable(model, found.trainable)
            optimizer.load_state_dict(found.optimizer["optimizer"])
            precision.load_state_dict(found.optimizer["scaler"])
            scheduler.load_state_dict(found.scheduler)
            batches.orders = {int(k): v for k, v in state["orders"].items()}
            result.losses = [tuple(x) for x in state["losses"]]
            result.val_losses = [tuple(x) for x in state["val_losses"]]
            result.best_step, best_val = state["best_step"], state["best_val"] or math.inf
            tokens_seen, real_total, padded_total = state["tokens"], state["real"], state["padded"]
            best = found.best
            start_step = found.step + 1
            result.resumed_from = found.step
            last_checkpoint = found.path
            ckpt.set_rng_state(found.rng)
            echo(f"resuming from {found.path} (step {found.step} of {steps})")

    def write_checkpoint(step: int) -> Path | None:
        path = None
        if main and checkpoint_dir is not None:
            current = batches.order((plan.micro_batches(step).stop - 1) // plan.per_epoch)
            epoch = (plan.micro_batches(step).stop - 1) // plan.per_epoch
            state = {
                "plan": plan_record, "micro_batches_done": plan.micro_batches(step).stop,
                "orders": {str(epoch): current}, "losses": result.losses,
                "val_losses": result.val_losses, "best_step": result.best_step,
                "best_val": None if math.isinf(best_val) else best_val, "tokens": tokens_seen,
                "real": real_total, "padded": padded_total, "config": dict(run_config or {}),
                "window": [window.loss, window.tokens, window.real, window.padded],
                "seconds": time.perf_counter() - started,
            }
            path = ckpt.save_checkpoint(checkpoint_dir, step, model=model, optimizer=optimizer, scaler=precision,
                                        scheduler=scheduler, state=state, save_adapter=save, best=best,
                                        keep=settings.save_total_limit)
            result.checkpoints.append(path)
        accelerator.wait_for_everyone()
        return path or (checkpoint_dir / f"step-{step}" if checkpoint_dir else None)

    def validation_loss() -> float:
        model.eval()
        total = count = 0.0
        order = sorted(range(len(val_encoded)), key=lambda i: len(val_encoded[i].input_ids))
        with torch.no_grad():
            for i in range(0, len(order), settings.micro_batch_size):
                rows = [val_encoded[j] for j in order[i : i + settings.micro_batch_size]]
                batch = collate_for_training(rows, pad_token_id, settings.pad_to_multiple_of)
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                with precision.autocast():
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                total += summed_loss(logits, batch["labels"]).item()
                count += sum(label_tokens(r) for r in rows)
        model.train()
        return total / max(1, count)

    if resume and main and metrics is not None:
        trim_metrics(metrics, start_step - 1)
    model.train()
    window = _Window()
    if result.resumed_from is not None:
        window.add(*found.state["window"])
    # seconds of training before an interruption count: the clock starts where the checkpoint's stopped
    started = time.perf_counter() - (found.state.get("seconds", 0.0) if result.resumed_from is not None else 0.0)
    step = start_step - 1
    with StopSignals() as stop, Progress(
        settings.progress if main else "none", steps, echo=echo, metrics=metrics if main else None
    ) as progress, Tracking(accelerator, settings.report_to, run_config) as tracking:
        progress.advance(step)
        for step in range(start_step, steps + 1):
            micro = [batches[g] for g in plan.micro_batches(step)]
            step_tokens = sum(n_labels[i] for idx in micro for i in idx)
            with precision.frozen_weights_cast(model):  # fp32 again for anything run between steps
                loss_sum = backward_step(
                    model, precision, [[encoded[i] for i in idx] for idx in micro],
                    rank=accelerator.process_index, world=world,
                    pad_token_id=pad_token_id, pad_to_multiple_of=settings.pad_to_multiple_of,
                    normalization=settings.loss_normalization,
                )
            if world > 1:
                loss_sum = _all_reduce_grads(accelerator, params, loss_sum)
            precision.unscale(optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm or math.inf))
            step_loss = loss_sum.item() / max(1, step_tokens)
            check_finite(step, step_loss, grad_norm if precision.scaler is None else None, last_checkpoint)
            lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
            if precision.step(optimizer):
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            real = sum(lengths[i] for idx in micro for i in idx)
            padded = sum(padded_width(max(lengths[i] for i in idx), settings.pad_to_multiple_of) * len(idx) for idx in micro)
            window.add(loss_sum.item(), step_tokens, real, padded)
            tokens_seen += step_tokens
            real_total += real
            padded_total += padded
            progress.advance(step)
            record: dict[str, Any] = {}
            if step % settings.logging_steps == 0 or step in (1, steps):
                elapsed = time.perf_counter() - window.started
                mean = window.loss / max(1, window.tokens)
                result.losses.append((step, mean))
                record = {"step": step, "epoch": round(plan.micro_batches(step).stop / plan.per_epoch, 4),
                          "loss": round(mean, 6), "lr": lr, "grad_norm": round(grad_norm, 6),
                          "tokens_per_second": round(window.real / max(elapsed, 1e-9), 1),
                          "padded_share": round(1 - window.real / max(1, window.padded), 4),
                          "seconds": round(time.perf_counter() - started, 2)}
                window = _Window()
            if val_encoded and ((settings.eval_steps and step % settings.eval_steps == 0) or step == steps):
                val = validation_loss()
                result.val_losses.append((step, val))
                record = {**(record or {"step": step}), "val_loss": round(val, 6)}
                if val < best_val:
                    best_val, result.best_step = val, step
                    if settings.keep_best:
                        best = ckpt.trainable_state(model)
            if record:
                progress.log(record)
                tracking.log(record)
            stopping = _stop_requested(accelerator, stop)
            if step < steps and (stopping or (settings.save_steps and step % settings.save_steps == 0)):
                last_checkpoint = write_checkpoint(step)
            if stopping:
                raise interrupted(stop.name or "a signal", step, last_checkpoint or Path("(no checkpoint_dir)"))

    if settings.keep_best and best is not None:
        ckpt.load_trainable(model, best)
    for p, dtype in zip(params, dtypes, strict=True):  # back to the model's dtype: what is saved is what ran
        p.data = p.data.to(dtype)
    model.eval()
    result.steps = steps
    result.epochs = plan.total / plan.per_epoch
    result.seconds = time.perf_counter() - started
    result.padded_share = 1 - real_total / padded_total if padded_total else 0.0
    result.real_tokens = real_total
    return result


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
) -> torch.Tensor:
    """Forward and backward over this process's share (round-robin) of one optimizer step's
    micro-batches; gradients accumulate in ``.grad``. Returns the summed loss of its share.

    With ``chunked_loss`` (where the model allows, see ``hf_compat.bypassed_output_head``) the
    vocabulary logits are computed only at label positions, in chunks (``chunked_summed_loss``).

    With ``normalization="tokens"`` the gradient equals that of one batch holding every
    micro-batch (normalised by the label tokens of the whole step, on every process)."""
    import torch

    step_tokens = sum(label_tokens(e) for rows in micro_batches for e in rows)
    loss_sum = torch.zeros((), device=precision.device)
    for rows in micro_batches[rank::world]:
        batch = collate_for_training(rows, pad_token_id, pad_to_multiple_of)
        batch = {k: v.to(precision.device) for k, v in batch.items()}
        summed = _summed_loss(model, precision, batch, chunked_loss)
        factor = scale(sum(label_tokens(e) for e in rows), step_tokens, len(micro_batches), normalization)
        precision.backward(summed * factor)
        loss_sum += summed.detach()
    return loss_sum


def _summed_loss(model: torch.nn.Module, precision: Precision, batch: Mapping[str, torch.Tensor],
                 chunked: bool) -> torch.Tensor:
    from lladapt.common.hf_compat import bypassed_output_head

    with bypassed_output_head(model) if chunked else contextlib.nullcontext() as head, precision.autocast():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        if head is not None:
            return chunked_summed_loss(out, head, batch["labels"])
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


def _place(model: torch.nn.Module, device: torch.device) -> None:
    """Move the model to the training device, unless it is there already or was placed by its
    loader (quantized models, device maps: ``.to`` is refused or would undo the map)."""
    current = next(model.parameters()).device
    if current.type == device.type and (current.index or 0) == (device.index or 0):
        return
    if getattr(model, "hf_device_map", None) or getattr(model, "hf_quantizer", None) is not None:
        return
    model.to(device)


def _stop_requested(accelerator: Any, stop: StopSignals) -> bool:
    """Whether any process received SIGINT/SIGTERM (all stop at the same step)."""
    if accelerator.num_processes == 1:
        return stop.received is not None
    import torch

    flag = torch.tensor([1.0 if stop.received is not None else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


def _enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    from lladapt.common import hf_compat

    base = getattr(model, "base_model", model)
    if not getattr(base, "supports_gradient_checkpointing", False) or not hf_compat.enable_activation_checkpointing(base):
        raise LladaptError(
            f"train.gradient_checkpointing: the model ({type(base).__name__}) does not support "
            "gradient checkpointing; set it to false"
        )
