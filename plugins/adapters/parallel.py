"""The parallel adapter of He et al. (2022)."""

from __future__ import annotations

from typing import Any, ClassVar

from lladapt.plugins.adapters.bottleneck import BottleneckAdapter

__all__ = ["ParallelAdapter"]


class ParallelAdapter(BottleneckAdapter):
    """Parallel bottleneck adapter: y = f_module(x) + s * up(f(down(dropout(x)))).

    He et al., "Towards a Unified View of Parameter-Efficient Transfer Learning", ICLR 2022
    (arXiv 2110.04366). On a Linear: ``in_features -> b -> out_features`` beside it (the
    LLM-Adapters code's ``parallel_adapter``). On a whole block (placements ``attention``, ``mlp``,
    ``both``): it reads the input of the block's first projection and adds to the output of its
    last, i.e. alongside the block. ``learn_scale`` gives the paper's "scaled parallel" adapter.

    Default placement: alongside each MLP block (``placement: mlp``), He et al.'s own placement
    and the site the EMNLP paper found best for parallel adapters (61.7 math average on LLaMA-7B).
    The v1 code's default (q, k, v) is ``docs/examples/paper-v1/*-parallel.yaml``; the EMNLP
    configuration (beside up and down, each Linear) is ``docs/examples/paper-emnlp/``.
    """

    name: ClassVar[str] = "parallel"
    modes: ClassVar[frozenset[str]] = frozenset({"parallel"})
    block_position: ClassVar[str] = "alongside"
    default_placement: ClassVar[dict[str, Any]] = {"name": "mlp"}

    def default_mode(self, role: str | None) -> str:
        return "parallel"
