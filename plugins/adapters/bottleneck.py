"""The bottleneck module shared by the series and the parallel adapter.

``delta(x) = s * up(f(down(dropout(x))))``, ``down`` and ``up`` without bias, as in the paper's
code (``adapter_down`` / ``adapter_up`` / ``adapter_scaling``, whose key names lladapt keeps so that
its checkpoints load directly). The series adapter adds ``delta`` to the tensor it read (input or
output of a Linear); the parallel adapter adds ``delta(x)`` to a module's output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, PositiveInt, field_validator

from lladapt import Adapter, AdapterError, ComponentConfig, Layout, Site

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lladapt.plugins.adapters.linear_hooks import HostedBranch

__all__ = ["ACTIVATIONS", "BottleneckAdapter", "BottleneckBranch", "BottleneckConfig"]

#: non-linearity name -> the ``torch.nn`` module that computes it, and its arguments (the names of
#: transformers' ``ACT2FN`` that the paper's code accepted; ``gelu`` is the exact erf form,
#: ``gelu_new`` the tanh approximation). Class names, so that importing this module needs no torch.
ACTIVATIONS: dict[str, tuple[str, dict]] = {
    "tanh": ("Tanh", {}),
    "relu": ("ReLU", {}),
    "gelu": ("GELU", {}),
    "gelu_new": ("GELU", {"approximate": "tanh"}),
    "silu": ("SiLU", {}),
    "swish": ("SiLU", {}),
    "sigmoid": ("Sigmoid", {}),
    "leaky_relu": ("LeakyReLU", {}),
    "mish": ("Mish", {}),
    "elu": ("ELU", {}),
    "identity": ("Identity", {}),
}

#: the names a config may give: the keys of :data:`ACTIVATIONS`, in one place.
NonLinearity = Literal[tuple(ACTIVATIONS)]  # type: ignore[valid-type]


def activation(name: str) -> nn.Module:
    from torch import nn

    cls, kwargs = ACTIVATIONS[name]
    return getattr(nn, cls)(**kwargs)


class BottleneckConfig(ComponentConfig):
    """Fields of both bottleneck adapters (series and parallel)."""

    #: width of the bottleneck ``b`` (the paper: 256; AdapterP in Table 1: 768).
    bottleneck_size: PositiveInt = 256
    #: the non-linearity ``f`` between down and up (the paper: tanh).
    non_linearity: NonLinearity = "tanh"
    #: dropout on the adapter's input.
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    #: ``bert``: down and up ~ N(0, 0.02) (the paper code's default); ``mam``: down
    #: kaiming-uniform, up zero, so the adapted model starts equal to the base model.
    init: Literal["bert", "mam"] = "bert"
    #: the scale ``s`` (its starting value when learned).
    scale: float = 1.0
    #: learn ``s`` as one trainable scalar (the paper's "learned" scaling).
    learn_scale: bool = False

    @field_validator("init", mode="before")
    @classmethod
    def _paper_name(cls, value: object) -> object:
        return "mam" if value == "mam_adapter" else value  # the paper code's spelling


class BottleneckBranch:
    """``delta(x) = s * up(f(down(dropout(x))))`` reading the host's ``adapter_*`` children."""

    def __init__(self, non_linearity: str, scale: float, learn_scale: bool):
        self.act = activation(non_linearity)
        self.scale = scale
        self.learn_scale = learn_scale

    def __call__(self, host: nn.Module, x: torch.Tensor) -> torch.Tensor:
        from lladapt.plugins.adapters import fused

        down: nn.Linear = host.adapter_down
        scale = host.adapter_scaling if self.learn_scale else self.scale
        if fused.enabled(host.adapter_dropout):
            return fused.bottleneck_delta(x, down, host.adapter_up, host.adapter_dropout, self.act, scale)
        h = host.adapter_up(self.act(down(host.adapter_dropout(x.to(down.weight.dtype)))))
        return h * scale


class BottleneckAdapter(Adapter):
    """Base of the series and parallel adapters: one bottleneck per module site."""

    Config = BottleneckConfig
    config: BottleneckConfig
    size_option: ClassVar[str] = "bottleneck_size"
    #: child names a bottleneck adds to its host Linear.
    CHILDREN: ClassVar[tuple[str, ...]] = (
        "adapter_down", "adapter_up", "adapter_dropout", "adapter_scaling",
    )

    def __init__(self, config: BottleneckConfig | None = None):
        super().__init__(config)
        self._hosted: list[HostedBranch] = []

    @staticmethod
    def widths(host: nn.Module, mode: str, source: nn.Module | None) -> tuple[int, int]:
        """(read width, write width) of a bottleneck at a site: input mode reads and writes the
        host's input, output mode its output, parallel reads the (source's) input and writes the
        host's output."""
        if mode == "input":
            return host.in_features, host.in_features
        if mode == "output":
            return host.out_features, host.out_features
        return (source or host).in_features, host.out_features

    def attach(self, model: nn.Module, layout: Layout, sites: Sequence[Site]) -> None:
        import torch
        from torch import nn

        from lladapt.plugins.adapters.linear_hooks import install_branch, new_linear

        cfg = self.config
        for site in sites:
            host = model.get_submodule(site.path)
            if hasattr(host, "adapter_down"):
                raise AdapterError(f"module '{site.path}' has a bottleneck adapter already")
            source = model.get_submodule(site.source) if site.source else None
            d_in, d_out = self.widths(host, site.mode, source)
            host.adapter_down = new_linear(d_in, cfg.bottleneck_size, host)
            host.adapter_up = new_linear(cfg.bottleneck_size, d_out, host)
            host.adapter_dropout = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()
            if cfg.learn_scale:
                host.adapter_scaling = nn.Parameter(
                    torch.full((1,), cfg.scale, device=host.adapter_up.weight.device,
                               dtype=host.adapter_up.weight.dtype)
                )
            self._initialise(host.adapter_down, host.adapter_up)
            branch = BottleneckBranch(cfg.non_linearity, cfg.scale, cfg.learn_scale)
            self._hosted.append(
                install_branch(host, site.mode, branch, source=source, where=site.path,
                               children=self.CHILDREN)
            )

    def _initialise(self, down: nn.Linear, up: nn.Linear) -> None:
        import torch
        from torch import nn

        with torch.no_grad():
            if self.config.init == "bert":
                down.weight.normal_(mean=0.0, std=0.02)
                up.weight.normal_(mean=0.0, std=0.02)
            else:
                nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
                nn.init.zeros_(up.weight)

    def share(self, gate: Any) -> None:
        """Apply only to the rows ``gate()`` names, with the bottlenecks moved out of the base
        model so that another bottleneck can attach at the same modules
        (:mod:`lladapt.adapters.rows`)."""
        for hosted in self._hosted:
            hosted.share(gate)

    def detach(self) -> None:
        """Remove every bottleneck and its hooks, restoring the base model."""
        for hosted in self._hosted:
            hosted.remove()
        self._hosted.clear()
