"""Mixed precision: torch's autocast and (fp16) gradient scaler around fp32 master weights.

Not accelerate's ``mixed_precision``: accelerate keeps it in a process-wide singleton
(``AcceleratorState``) that refuses a second, different value in the same Python process, so two
runs with different ``train.precision`` could not follow each other in one session."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lladapt.common.errors import LladaptError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def mixed_precision(precision: str) -> str:
    """``no``, ``fp16`` or ``bf16`` for a ``train.precision`` value on this machine. ``auto``: on a
    GPU bf16 where supported, else fp16; on the CPU bf16 where it is native, else fp32 (``no``).
    Mixed precision always keeps fp32 master weights (the loop casts the trainable ones)."""
    import torch

    if precision == "fp32":
        return "no"
    if precision == "fp16" and not torch.cuda.is_available():
        raise LladaptError("train.precision: fp16 needs a CUDA GPU; on the CPU use fp32 (or bf16)")
    if precision in ("fp16", "bf16"):
        return precision
    if not torch.cuda.is_available():
        return "bf16" if native_cpu_bf16() else "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


#: CPU flags (``/proc/cpuinfo``) of instructions that compute bf16 natively: AVX-512 BF16 (Cooper
#: Lake, Zen 4 and later) and AMX (Sapphire Rapids and later). Without them oneDNN emulates bf16
#: and autocast is slower than fp32 (measured on an AVX2 machine, issue 10).
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags of the first CPU in ``cpuinfo`` (empty where there is no such file)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls natively (see :data:`BF16_FLAGS`), detected at run
    time; ``train.precision: auto`` trains in bf16 autocast on the CPU only then."""
    return bool(cpu_flags() & BF16_FLAGS)


class Precision:
    def __init__(self, mode: str, device: torch.device) -> None:
        import torch

        self.mode, self.device = mode, device
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mode)
        self.scaler = torch.amp.GradScaler(device.type) if mode == "fp16" else None
        self._casts: dict[int, tuple[torch.Tensor, tuple[int, int, torch.dtype], torch.Tensor]] = {}

    def autocast(self) -> Any:
        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def frozen_cast(self, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``tensor`` in ``dtype``; a frozen one is cast once and the cast held for the run (until
        the tensor changes). For the output head's weight under autocast: tied to the input
        embedding, it stays fp32 (:class:`FrozenInBf16`), and the chunked loss cast it at every
        micro-batch (47 ms for SmolLM2's on 2 cores, in a bf16 profile)."""
        if tensor.requires_grad or tensor.dtype == dtype:
            return tensor.to(dtype)
        key = (tensor._version, tensor.data_ptr(), dtype)
        held = self._casts.get(id(tensor))
        if held is None or held[1] != key:
            held = self._casts[id(tensor)] = (tensor, key, tensor.to(dtype))
        return held[2]

    def frozen_weights_cast(self, model: torch.nn.Module) -> FrozenInBf16:
        """The run's frozen Linear weights in bf16 while it trains (:class:`FrozenInBf16`), on
        the CPU under bf16 only (elsewhere a context that does nothing)."""
        import torch

        return FrozenInBf16(model, active=self.dtype is torch.bfloat16 and self.device.type == "cpu")

    def attention(self, model: torch.nn.Module) -> contextlib.AbstractContextManager[str | None]:
        """The model's attention for the run on the CPU
        (:func:`~lladapt.training.attention.training_attention`): causal queries in chunks, and
        in bf16 matmuls under bf16, where torch's bf16 attention kernel is the slower one; a bf16
        run on a CPU with AMX (whose bf16 kernel was not measured) and any other device keep
        theirs."""
        import torch

        from lladapt.training.attention import training_attention

        bf16 = self.dtype is torch.bfloat16
        cpu = self.device.type == "cpu" and not (bf16 and "amx_bf16" in cpu_flags())
        return training_attention(model, active=cpu, bf16=bf16)

    def packed_linears(self, model: torch.nn.Module, active: bool) -> contextlib.AbstractContextManager[int]:
        """The frozen Linear layers in the dtype their matmuls run in computed on weights packed
        for oneDNN for the run, where ``active``
        (:func:`~lladapt.training.packed_linear.packed_frozen_linears`): on the CPU only, in bf16
        where it is native, in fp32 with AVX-512 (where both were measured); yields how many."""
        import torch

        from lladapt.training.packed_linear import packed_frozen_linears

        dtype = None
        if active and self.device.type == "cpu":
            if self.dtype is torch.bfloat16 and native_cpu_bf16():
                dtype = torch.bfloat16
            elif self.dtype is None and "avx512f" in cpu_flags():
                dtype = torch.float32
        return packed_frozen_linears(model, dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: Any) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: Any) -> bool:
        """The optimizer step; False when the fp16 scaler skipped it (inf/NaN gradients)."""
        if self.scaler is None:
            optimizer.step()
            return True
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= before

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


class FrozenInBf16:
    """bf16 on the CPU: hold the frozen ``nn.Linear`` weights in bf16 for the whole run, so that
    autocast does not cast them again at every matmul of every micro-batch (it caches casts of
    trainable leaves only; the profile showed ``aten::copy_`` at a quarter of the step). The fp32
    originals are parked in a temporary file meanwhile (:func:`parked`), so the run holds 2 bytes
    per frozen weight instead of 4 (+ 2 while a step ran, in the per-step cast this replaced),
    and put back, bit for bit, on exit and for a moment around anything run outside autocast
    between steps (:meth:`fp32`: checkpoint writes, whose ``save`` callback is the caller's). A
    weight shared with the input embedding (a tied output head) is left alone: the embedding
    output, hence the residual stream, stays fp32. ``count``: how many weights are held in bf16
    (0 when not active)."""

    def __init__(self, model: torch.nn.Module, active: bool) -> None:
        self.model, self.active = model, active
        self.weights: list[torch.nn.Parameter] = []
        self.count = 0
        self._stack = contextlib.ExitStack()
        self._originals: Callable[[], list[torch.Tensor]] | None = None

    def __enter__(self) -> FrozenInBf16:
        if self.active:
            import torch

            from lladapt.training.packed_linear import frozen_linears

            self.weights = [m.weight for m in frozen_linears(self.model, torch.float32)]
            self._originals = self._stack.enter_context(parked([w.data for w in self.weights]))
            self._to_bf16()
            self.count = len(self.weights)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._originals is not None:
                self._put_back()
        finally:
            self._stack.close()

    def _to_bf16(self) -> None:
        import torch

        for weight in self.weights:
            weight.data = weight.data.to(torch.bfloat16)

    def _put_back(self) -> None:
        for weight, data in zip(self.weights, self._originals(), strict=True):
            weight.data = data

    @contextlib.contextmanager
    def fp32(self) -> Iterator[None]:
        """The fp32 originals in the model for the duration (read back from the parking file),
        bf16 again afterwards."""
        if self._originals is None:
            yield
            return
        self._put_back()
        try:
            yield
        finally:
            self._to_bf16()


@contextlib.contextmanager
def parked(tensors: list[torch.Tensor]) -> Iterator[Callable[[], list[torch.Tensor]]]:
    """Write CPU ``tensors`` to an unnamed temporary file (``TMPDIR``) and yield a function that
    reads them back (new tensors, equal bit for bit); the caller drops its references meanwhile,
    so their memory is freed. Where the file cannot be written (a full disk), the tensors stay in
    memory and the function returns them."""
    import tempfile

    import numpy as np
    import torch

    try:
        file = tempfile.TemporaryFile(prefix="lladapt-fp32-")  # noqa: SIM115 - closed by the with below
        for tensor in tensors:
            tensor.contiguous().numpy().tofile(file)
        file.flush()
    except OSError:
        kept = list(tensors)
        tensors.clear()
        yield lambda: kept
        return
    shapes = [(t.shape, t.dtype, t.numel()) for t in tensors]
    tensors.clear()

    def read_back() -> list[torch.Tensor]:
        file.seek(0)
        numpy_dtype = {torch.float32: np.float32}
        return [torch.from_numpy(np.fromfile(file, dtype=numpy_dtype[dtype], count=n)).view(shape)
                for shape, dtype, n in shapes]

    with file:
        yield read_back
