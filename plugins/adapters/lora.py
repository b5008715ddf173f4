"""LoRA (Hu et al., 2021): a trainable low-rank update beside each target Linear."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, PositiveFloat, PositiveInt

from lladapt import Adapter, AdapterError, ComponentConfig, Layout, Site
from lladapt.common import hf_compat

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lladapt.plugins.adapters.linear_hooks import HostedBranch

__all__ = ["LoraAdapter", "LoraBranch", "LoraConfig"]



class LoraConfig(ComponentConfig):
    """LoRA's fields (defaults: the LLM-Adapters code's)."""

    #: rank of the update.
    r: PositiveInt = 8
    #: the update is scaled by ``alpha / r`` (``alpha / sqrt(r)`` with ``use_rslora``).
    alpha: PositiveFloat = 16.0
    #: dropout on the LoRA branch's input.
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    #: rank-stabilised scaling ``alpha / sqrt(r)`` (Kalajdzievski, 2023).
    use_rslora: bool = False

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


class LoraBranch:
    """``delta(x) = scaling * B(A(dropout(x)))`` from the host's ``lora_*`` children; nothing
    while merged (the update is in the weight then)."""

    def __init__(self, scaling: float):
        self.scaling = scaling
        self.merged = False
        self.original: torch.Tensor | None = None

    def __call__(self, host: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        if self.merged:
            return None
        from lladapt.plugins.adapters import fused

        a: nn.Linear = host.lora_A
        if fused.enabled(host.lora_dropout):
            return fused.lora_delta(x, a, host.lora_B, host.lora_dropout, self.scaling)
        return host.lora_B(a(host.lora_dropout(x.to(a.weight.dtype)))) * self.scaling


class LoraAdapter(Adapter):
    """LoRA: W x + (alpha / r) * B A dropout(x), A kaiming-uniform, B zero.

    Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022 (arXiv
    2106.09685). One update per target Linear, over the whole layer (on BLOOM's fused
    ``query_key_value`` too). Since B starts at zero the adapted model starts equal to the base.
    Mergeable into the base weights (not into quantized ones). Saved in PEFT's format:
    ``peft.PeftModel.from_pretrained(base, folder)`` loads what lladapt writes.

    Default placement: q and v of every layer (Hu et al.'s and the LLM-Adapters code's default);
    the EMNLP paper's best (q, k, v, up, down at r=32) is ``docs/examples/paper-emnlp/``.
    """

    name: ClassVar[str] = "lora"
    modes: ClassVar[frozenset[str]] = frozenset({"parallel"})
    block_position: ClassVar[str] = "projections"
    default_placement: ClassVar[dict[str, Any]] = {"name": "modules", "modules": ["q", "v"]}
    Config = LoraConfig
    config: LoraConfig
    #: PEFT's name for it (folders PEFT wrote load through this adapter).
    peft_type: ClassVar[str] = "LORA"
    size_option: ClassVar[str] = "r"

    CHILDREN: ClassVar[tuple[str, ...]] = ("lora_A", "lora_B", "lora_dropout")

    def __init__(self, config: LoraConfig | None = None):
        super().__init__(config)
        self._hosted: list[tuple[Site, HostedBranch, LoraBranch]] = []
        self._name_or_path: str | None = None

    def default_mode(self, role: str | None) -> str:
        return "parallel"

    def attach(self, model: nn.Module, layout: Layout, sites: Sequence[Site]) -> None:
        import torch
        from torch import nn

        from lladapt.plugins.adapters.linear_hooks import install_branch, new_linear

        cfg = self.config
        self._name_or_path = hf_compat.name_or_path(model)
        for site in sites:
            if site.source is not None:
                raise AdapterError(
                    f"LoRA updates one Linear; site '{site.path}' reads another module "
                    f"('{site.source}'). Use placement 'modules' or a block placement."
                )
            host = model.get_submodule(site.path)
            if hasattr(host, "lora_A"):
                raise AdapterError(f"module '{site.path}' has a LoRA adapter already")
            host.lora_A = new_linear(host.in_features, cfg.r, host)
            host.lora_B = new_linear(cfg.r, host.out_features, host)
            host.lora_dropout = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()
            with torch.no_grad():
                nn.init.kaiming_uniform_(host.lora_A.weight, a=math.sqrt(5))
                nn.init.zeros_(host.lora_B.weight)
            branch = LoraBranch(cfg.scaling)
            hosted = install_branch(host, "parallel", branch, where=site.path,
                                    children=self.CHILDREN)
            self._hosted.append((site, hosted, branch))

    # -- merging
    def merge(self, keep_original: bool = True) -> None:
        """Add ``scaling * B @ A`` to each target weight; ``keep_original`` keeps a copy of the
        weight for an exact :meth:`unmerge`."""
        import torch

        from lladapt.plugins.adapters.linear_hooks import is_quantized

        quantized = [s.path for s, h, _ in self._hosted if is_quantized(h.host)]
        if quantized:
            raise AdapterError(
                "cannot merge LoRA into quantized layers ("
                + ", ".join(quantized[:3]) + (", ..." if len(quantized) > 3 else "")
                + "): their weights are 4-bit/8-bit. Load the base model unquantized, load the "
                "adapter into it, then merge."
            )
        with torch.no_grad():
            for _, hosted, branch in self._hosted:
                host = hosted.host
                weight = host.weight
                if keep_original:
                    branch.original = weight.detach().clone()
                update = host.lora_B.weight.float() @ host.lora_A.weight.float()
                weight.add_((update * branch.scaling).to(weight.dtype))
                branch.merged = True

    def unmerge(self) -> None:
        """Take the update out again: restores the copy kept by :meth:`merge` (exact), or
        subtracts it (equal up to rounding)."""
        import torch

        with torch.no_grad():
            for _, hosted, branch in self._hosted:
                host = hosted.host
                if branch.original is not None:
                    host.weight.copy_(branch.original)
                    branch.original = None
                else:
                    update = host.lora_B.weight.float() @ host.lora_A.weight.float()
                    host.weight.sub_((update * branch.scaling).to(host.weight.dtype))
                branch.merged = False

    def share(self, gate: Any) -> None:
        """Apply only to the rows ``gate()`` names, with the LoRA modules moved out of the base
        model so that another LoRA can attach at the same modules
        (:mod:`lladapt.adapters.rows`). Not while merged: the update would apply to every row."""
        if any(branch.merged for _, _, branch in self._hosted):
            raise AdapterError("a merged LoRA applies to every row; unmerge it before sharing the base")
        for _, hosted, _ in self._hosted:
            hosted.share(gate)

    def detach(self) -> None:
        """Remove every LoRA branch (merged updates stay in the weights)."""
        for _, hosted, _ in self._hosted:
            hosted.remove()
        self._hosted.clear()

    # -- PEFT interop
    def to_peft(self, state: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], dict]:
        """PEFT's ``LoraConfig`` fields, targeting exactly the attached modules (full paths, which
        PEFT matches exactly), and the tensors under PEFT's keys."""
        from lladapt.adapters.files import to_peft_keys

        cfg = self.config
        peft_config = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": self._name_or_path,
            "r": cfg.r,
            "lora_alpha": cfg.alpha,
            "lora_dropout": cfg.dropout,
            "use_rslora": cfg.use_rslora,
            "target_modules": sorted(site.path for site, _, _ in self._hosted),
            "bias": "none",
            "fan_in_fan_out": False,
            "init_lora_weights": True,
            "inference_mode": True,
            "use_dora": False,
            "modules_to_save": None,
        }
        return peft_config, to_peft_keys(state)

    @classmethod
    def from_peft(
        cls, peft_config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """PEFT's keys back to module paths (``base_model.model.`` off; PEFT < 0.5 files and the
        paper's code use the same keys)."""
        from lladapt.adapters.files import from_peft_keys

        return from_peft_keys(tensors, "a PEFT LoRA file")

    @classmethod
    def sites_from_peft(
        cls, peft_config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], layout: Layout
    ) -> tuple[LoraConfig, list[Site]]:
        """The Config and sites of a LoRA folder written by PEFT (or the paper's code): one site
        per module that has a ``lora_A`` tensor."""
        from lladapt.adapters.sites import site_for_path

        unsupported = {
            "use_dora": bool(peft_config.get("use_dora")),
            "rank_pattern": bool(peft_config.get("rank_pattern")),
            "alpha_pattern": bool(peft_config.get("alpha_pattern")),
            "modules_to_save": bool(peft_config.get("modules_to_save")),
            "bias": peft_config.get("bias", "none") not in ("none", None),
            "fan_in_fan_out": bool(peft_config.get("fan_in_fan_out")),
            "enable_lora": peft_config.get("enable_lora") is not None,
        }
        bad = [k for k, v in unsupported.items() if v]
        if bad:
            raise AdapterError(
                f"this LoRA checkpoint uses PEFT options lladapt does not import: {', '.join(bad)}"
            )
        config = LoraConfig(
            r=peft_config["r"],
            alpha=peft_config.get("lora_alpha", 8),
            dropout=peft_config.get("lora_dropout", 0.0),
            use_rslora=bool(peft_config.get("use_rslora", False)),
        )
        paths = sorted(
            key[: -len(".lora_A.weight")]
            for key in cls.from_peft(peft_config, tensors)
            if key.endswith(".lora_A.weight")
        )
        return config, [site_for_path(layout, path, "parallel") for path in paths]

