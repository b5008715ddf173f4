"""What this machine allows the issue-20 workloads, measured on the shapes they run (2 threads):
the bounds docs/benchmarks.md sets the training and evaluation figures against.

* memory: streaming read and copy bandwidth over 1 GiB (the floor of a decode step, which reads
  every weight once);
* decode: the output head of SmolLM2 (49,152 x 576, fp32) applied to 16 rows, with the weights
  out of cache, as ``F.linear`` runs it and as ``W @ x.T``: the bytes per second a 16-row matmul
  streams, against the bandwidth above;
* attention: SDPA forward + backward of one SmolLM2 layer on a 4 x 150-token micro-batch
  (9 query heads, 3 key-value heads, head size 64), flash and math backends, causal and with a
  padding mask;
* the chunked loss: the elementwise work of one 1,024-row chunk of fp32 logits (49,152 wide),
  as ``lladapt.training.loss`` does it (logsumexp, subtract, exp) and with one ``log_softmax``.

    .venv/bin/python benchmarks/hardware_limits.py --out benchmarks/results/<date>-hardware-limits.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from matmul_peak import best_seconds


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    return round(best_seconds(fn, repeats) * 1e3, 3)


def memory(repeats: int) -> dict[str, float]:
    import torch

    x = torch.randn(256 * 1024 * 1024)  # 1 GiB of fp32
    y = torch.empty_like(x)
    read, copy = best_ms(x.sum, repeats), best_ms(lambda: y.copy_(x), repeats)
    return {"read_gb_s": round(x.nbytes / read / 1e6, 1), "copy_gb_s": round(2 * x.nbytes / copy / 1e6, 1)}


def decode_head(repeats: int) -> dict[str, float]:
    """Seconds and GB/s of the head on 16 rows, cycling over copies so the weights come from memory."""
    import torch

    weights = [torch.randn(49152, 576) for _ in range(4)]
    x = torch.randn(16, 576)
    turn = iter(range(10**9))

    def pick() -> torch.Tensor:
        return weights[next(turn) % len(weights)]

    out = {}
    for name, fn in (("linear", lambda: torch.nn.functional.linear(x, pick())),
                     ("w_at_xt", lambda: torch.mm(pick(), x.t()))):
        ms = best_ms(fn, repeats)
        out[f"{name}_ms"], out[f"{name}_gb_s"] = ms, round(weights[0].nbytes / ms / 1e6, 1)
    return out


def attention(repeats: int) -> dict[str, float]:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(4, 9, 150, 64, requires_grad=True)
    k, v = (torch.randn(4, 3, 150, 64, requires_grad=True) for _ in range(2))
    mask = torch.ones(150, 150, dtype=torch.bool).tril().expand(4, 1, 150, 150).clone()
    mask[0, :, 5:, :5] = False  # a left-padded row

    def step(backend: SDPBackend, masked: bool) -> None:
        with sdpa_kernel(backend):
            kk, vv = k.repeat_interleave(3, 1), v.repeat_interleave(3, 1)
            extra = {"attn_mask": mask} if masked else {"is_causal": True}
            F.scaled_dot_product_attention(q, kk, vv, **extra).sum().backward()

    import functools

    return {f"{backend.name.lower()}_{'mask' if masked else 'causal'}_ms": best_ms(functools.partial(step, backend, masked), repeats)
            for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH) for masked in (False, True)}


def loss_chunk(repeats: int) -> dict[str, float]:
    import torch

    logits = torch.randn(1024, 49152) * 3
    targets = torch.randint(0, 49152, (1024,))

    def lladapt_way() -> None:
        work = logits.clone()
        lse = torch.logsumexp(work, -1)
        (lse - work.gather(1, targets[:, None]).squeeze(1)).sum()
        work.sub_(lse[:, None]).exp_()

    def log_softmax_way() -> None:
        work = torch.log_softmax(logits, -1)
        work.gather(1, targets[:, None]).sum()
        work.exp_()

    clone = best_ms(logits.clone, repeats)
    return {"logsumexp_sub_exp_ms": round(best_ms(lladapt_way, repeats) - clone, 3),
            "log_softmax_exp_ms": best_ms(log_softmax_way, repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "torch": torch.__version__,
              "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    for name, fn in (("memory", memory), ("decode_head_16_rows", decode_head),
                     ("attention_layer", attention), ("loss_chunk_1024_rows", loss_chunk)):
        result[name] = fn(args.repeats)
    print(json.dumps(result, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
