"""The series (bottleneck) adapter of Houlsby et al. (2019) and Pfeiffer et al. (2020)."""

from __future__ import annotations

from typing import Any, ClassVar

from lladapt.plugins.adapters.bottleneck import BottleneckAdapter

__all__ = ["SeriesAdapter"]


class SeriesAdapter(BottleneckAdapter):
    """Series bottleneck adapter: h + s * up(f(down(dropout(h)))) on a Linear's input or output.

    Houlsby et al., "Parameter-Efficient Transfer Learning for NLP", ICML 2019 (arXiv 1902.00751);
    Pfeiffer et al., "AdapterFusion", EACL 2021 (arXiv 2005.00247). ``down``: d -> b, ``up``:
    b -> d, no bias. Mode ``input`` transforms the Linear's input (width ``in_features``; the
    LLM-Adapters code's ``mh_adapter``), mode ``output`` its output (width ``out_features``; its
    ``output_adapter``). Placed on a whole block it goes after the block's output (the out
    projection ``o`` / ``down`` in output mode).

    Default placement: one adapter after each MLP block (``placement: mlp``): the Pfeiffer
    placement, and the one the EMNLP paper found best for series adapters on LLaMA-7B (59.5 math
    average; 67,108,864 parameters at b=256). The v1 paper's AdapterH (the code's default: gate and
    up input, down output) is ``docs/examples/paper-v1/*-series-h.yaml``.
    """

    name: ClassVar[str] = "series"
    aliases: ClassVar[tuple[str, ...]] = ("bottleneck",)
    modes: ClassVar[frozenset[str]] = frozenset({"input", "output"})
    block_position: ClassVar[str] = "after"
    default_placement: ClassVar[dict[str, Any]] = {"name": "mlp"}

    #: roles whose adapter reads the Linear's input by default (the code's ``mh_adapter``).
    INPUT_ROLES: ClassVar[frozenset[str]] = frozenset({"gate", "up"})

    def default_mode(self, role: str | None) -> str:
        """``input`` on the MLP's input projections (gate, up), ``output`` elsewhere."""
        return "input" if role in self.INPUT_ROLES else "output"
