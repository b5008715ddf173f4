"""Peak memory of training one adapter configuration with one stack, in a process of its own.

``run_bench.py`` starts one of these per (configuration, stack): a process's peak resident set
(``getrusage().ru_maxrss``) is a high-water mark that never goes down, so configurations measured
in one process would hide each other. tracemalloc does not see torch's allocations at all.

Prints one JSON object:

* ``peak_rss_mb``: the whole process's peak resident set (imports, base model, adapter, optimizer
  state, activations of the training steps). On Linux this is the kernel's ``VmHWM``, not
  ``ru_maxrss``: a child forked from a large parent inherits the parent's high-water mark into
  ``ru_maxrss`` (the fork copies the parent's memory map, exec records its peak), so every
  configuration read the benchmark runner's own size. ``ru_maxrss`` is the fallback elsewhere;
* ``after_attach_rss_mb``: the resident set once the adapter is attached, before training;
* ``train_peak_rss_mb``: the peak during the training steps alone (the kernel's high-water mark
  is reset through ``/proc/self/clear_refs`` after attaching; null where that is not possible),
  and ``train_growth_mb`` = that peak minus ``after_attach_rss_mb``;
* ``saved_for_backward_mb``: the tensors autograd keeps for the backward pass of one step (each
  storage once, the frozen weights left out), counted through ``saved_tensors_hooks``. Unlike the
  resident set (which moves by tens of MB from run to run with the allocator and with which
  memory-mapped weight pages happen to be touched) it is exact and repeatable, so it is the
  number that shows whether one stack keeps more activations than the other;
* on a GPU, ``cuda_peak_mb``: ``torch.cuda.max_memory_allocated`` over the training steps.

Usage: ``python benchmarks/peak_memory.py --model-dir DIR --setup lora-r8-qv --stack peft``
"""

from __future__ import annotations

import argparse
import json
import re
import resource
from pathlib import Path
from typing import Any

import setups

from lladapt.adapters.count import count_module_parameters


def _status_mb(field: str) -> int | None:
    """A ``VmRSS`` / ``VmHWM`` line of ``/proc/self/status`` in MiB (None off Linux)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) // 1024 if match else None


def _peak_mb() -> int:
    """This process's peak resident set in MiB (see the module docstring for why not
    ``ru_maxrss`` first)."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def saved_for_backward(model, batch) -> tuple[int, Any]:
    """Bytes autograd saves for backward in one forward (distinct storages, parameters left
    out), and the loss to call backward on."""
    import torch

    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(**batch).loss
    return sum(seen.values()), loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--setup", choices=sorted(setups.SETUPS), required=True)
    parser.add_argument("--stack", choices=setups.STACKS, required=True)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    setups.set_threads(args.threads)
    import torch

    model, loaded = setups.build(args.stack, setups.SETUPS[args.setup], args.model_dir, args.device)
    optimizer = torch.optim.AdamW(setups.trainable(model), lr=1e-4)
    batch = setups.training_batch(loaded.hf_config.vocab_size, args.batch, args.length, args.device)
    after_attach = _status_mb("VmRSS")
    # the reset below lowers the mark: keep the peak of loading and attaching
    load_peak = _peak_mb()
    reset = _reset_peak()
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    saved = 0
    for step in range(args.steps):
        if step == 0:
            saved, loss = saved_for_backward(model, batch)
        else:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    train_peak = _status_mb("VmHWM") if reset else None
    result = {
        "setup": args.setup,
        "stack": args.stack,
        "steps": args.steps,
        "peak_rss_mb": max(load_peak, _peak_mb()),
        "after_attach_rss_mb": after_attach,
        "train_peak_rss_mb": train_peak,
        "train_growth_mb": None if train_peak is None or after_attach is None
        else train_peak - after_attach,
        "saved_for_backward_mb": round(saved / 2**20, 2),
        "trainable_parameters": count_module_parameters(model, trainable_only=True),
    }
    if cuda:
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() // 2**20
    print(json.dumps(result))


if __name__ == "__main__":
    main()
