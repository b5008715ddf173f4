"""IA3 (Liu et al., 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
In-Context Learning", arXiv 2205.05638): a learned vector rescales the channels of a Linear layer,
its output (keys, values) or its input (the MLP's down projection). The vectors start at one, so
the adapted model starts equal to the base.

The tensor of a site is the host Linear's parameter ``ia3_l``: ``(out_features, 1)`` on the output,
``(1, in_features)`` on the input, PEFT's names and shapes, so the folder lladapt saves loads in
``peft.PeftModel.from_pretrained`` and a folder PEFT wrote loads in lladapt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

import lladapt
from lladapt.adapters.files import from_peft_keys, to_peft_keys
from lladapt.adapters.sites import site_for_path


@dataclass
class _Scaling:
    """The hook of one site: multiplies by the host's ``ia3_l`` unless merged into its weight."""

    site: lladapt.Site
    host: nn.Module
    handle: RemovableHandle | None = None
    merged: bool = False
    original: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def scale_input(self, module: nn.Module, args: tuple) -> tuple | None:
        if self.merged:
            return None
        return (args[0] * module.ia3_l.flatten().to(args[0].dtype), *args[1:])

    def scale_output(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return out if self.merged else out * module.ia3_l.flatten().to(out.dtype)


class IA3Adapter(lladapt.Adapter):
    """IA3: a learned per-channel scaling vector on each target Linear's output (or input).

    Default placement: keys, values and the MLP's down projection (its input), PEFT's default for
    LLaMA: 614,400 parameters on LLaMA-7B. Mergeable; saved in PEFT's format.
    """

    name: ClassVar[str] = "ia3"
    modes: ClassVar[frozenset[str]] = frozenset({"input", "output"})
    block_position: ClassVar[str] = "projections"  # on a block: every projection, default mode
    default_placement: ClassVar[dict[str, Any]] = {"name": "modules", "modules": ["k", "v", "down"]}
    default_learning_rate: ClassVar[float] = 3e-3  # the T-Few recipe's
    peft_type: ClassVar[str] = "IA3"
    #: roles scaled on their input (PEFT's ``feedforward_modules``).
    INPUT_ROLES: ClassVar[frozenset[str]] = frozenset({"down"})

    class Config(lladapt.ComponentConfig):
        pass  # IA3 has no hyperparameters: a vector per site, initialised to one

    def __init__(self, config: Config | None = None):
        super().__init__(config)
        self._sites: list[_Scaling] = []
        self._name_or_path: str | None = None

    def default_mode(self, role: str | None) -> str:
        """``input`` on the MLP's output projection, ``output`` elsewhere (None: a module the
        backbone's layout does not name)."""
        return "input" if role in self.INPUT_ROLES else "output"

    def attach(self, model: nn.Module, layout: lladapt.Layout, sites: Sequence[lladapt.Site]) -> None:
        self._name_or_path = getattr(getattr(model, "config", None), "_name_or_path", None) or None
        for site in sites:
            if site.source is not None:
                raise lladapt.AdapterError(f"IA3 scales one Linear; site '{site.path}' reads another")
            host = model.get_submodule(site.path)
            if "ia3_l" in host._parameters:
                raise lladapt.AdapterError(f"module '{site.path}' has an IA3 vector already")
            shape = (1, host.in_features) if site.mode == "input" else (host.out_features, 1)
            weight = host.weight
            host.ia3_l = nn.Parameter(torch.ones(shape, device=weight.device, dtype=weight.dtype))
            hosted = _Scaling(site, host)
            hosted.handle = (
                host.register_forward_pre_hook(hosted.scale_input)
                if site.mode == "input"
                else host.register_forward_hook(hosted.scale_output)
            )
            self._sites.append(hosted)

    def merge(self, keep_original: bool = True) -> None:
        """Multiply each weight's rows (output) or columns (input) by the vector."""
        with torch.no_grad():
            for s in self._sites:
                weight, bias = s.host.weight, s.host.bias
                if keep_original:
                    s.original = (weight.clone(), None if bias is None else bias.clone())
                weight.mul_(s.host.ia3_l.to(weight.dtype))
                if bias is not None and s.site.mode == "output":
                    bias.mul_(s.host.ia3_l.flatten().to(bias.dtype))
                s.merged = True

    def unmerge(self) -> None:
        """Restore the copies :meth:`merge` kept (exact), else divide (equal up to rounding)."""
        with torch.no_grad():
            for s in self._sites:
                weight, bias = s.host.weight, s.host.bias
                if s.original is not None:
                    weight.copy_(s.original[0])
                    if bias is not None:
                        bias.copy_(s.original[1])
                else:
                    weight.div_(s.host.ia3_l.to(weight.dtype))
                    if bias is not None and s.site.mode == "output":
                        bias.div_(s.host.ia3_l.flatten().to(bias.dtype))
                s.original, s.merged = None, False

    def detach(self) -> None:
        """Remove the hooks and vectors (a merged scaling stays in the weights)."""
        for s in self._sites:
            s.handle.remove()
            del s.host._parameters["ia3_l"]
        self._sites.clear()

    def to_peft(self, state: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], dict]:
        """PEFT's ``IA3Config`` (full module paths: PEFT matches them exactly) and PEFT's keys."""
        peft_config = {
            "peft_type": "IA3",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": self._name_or_path,
            "target_modules": sorted(s.site.path for s in self._sites),
            "feedforward_modules": sorted(s.site.path for s in self._sites if s.site.mode == "input"),
            "fan_in_fan_out": False,
            "init_ia3_weights": True,
            "inference_mode": True,
            "modules_to_save": None,
        }
        return peft_config, to_peft_keys(state)

    @classmethod
    def from_peft(cls, peft_config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> dict:
        """PEFT's keys back to module paths."""
        return from_peft_keys(tensors, "a PEFT IA3 file")

    @classmethod
    def sites_from_peft(
        cls, peft_config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], layout: lladapt.Layout
    ) -> tuple[Config, list[lladapt.Site]]:
        """One site per ``ia3_l`` tensor; ``input`` where PEFT's ``feedforward_modules`` match."""
        feedforward = peft_config.get("feedforward_modules") or []
        feedforward = [feedforward] if isinstance(feedforward, str) else feedforward
        paths = sorted(k[: -len(".ia3_l")] for k in cls.from_peft(peft_config, tensors) if k.endswith(".ia3_l"))
        sites = [
            site_for_path(
                layout, path,
                "input" if any(path == f or path.endswith("." + f) for f in feedforward) else "output",
            )
            for path in paths
        ]
        return cls.Config(), sites
