"""P-tuning: virtual token embeddings produced by a trainable prompt encoder (MLP or LSTM).

Liu, Zheng, Du, Ding, Qian, Yang & Tang, "GPT Understands, Too", 2021 (arXiv 2103.10385). The
virtual tokens are not trained directly: an encoder (a bidirectional LSTM with an MLP head, or an
MLP) maps trainable inputs to them, which the paper found makes the tokens depend on each other
and optimise better. As in PEFT's ``PromptEncoder`` (whose layout and parameter names this
follows), the tokens are prepended to the input; the paper's anchor tokens and free placement
inside a template are not modelled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, PositiveInt, model_validator

from lladapt import AdapterError, Layout
from lladapt.plugins.adapters.prompt_learning import (
    MODULE_NAME,
    PromptLearningAdapter,
    PromptLearningConfig,
    embeddings_path,
)

if TYPE_CHECKING:
    import torch

    from lladapt.plugins.adapters.prompt_encoders import PromptEncoder

__all__ = ["PTuning"]


class PTuning(PromptLearningAdapter):
    """P-tuning (Liu et al. 2021): virtual tokens produced by an MLP or LSTM prompt encoder."""

    name: ClassVar[str] = "ptuning"
    aliases: ClassVar[tuple[str, ...]] = ("p_tuning", "p-tuning")
    site_kind: ClassVar = "model"
    default_placement: ClassVar[Mapping[str, Any]] = {"name": "embeddings"}
    peft_type: ClassVar[str] = "P_TUNING"

    class Config(PromptLearningConfig):
        #: the prompt encoder: ``mlp`` (PEFT's recommendation) or ``lstm`` (the paper's).
        encoder: Literal["mlp", "lstm"] = "mlp"
        #: encoder width (default: the embedding width).
        encoder_hidden_size: PositiveInt | None = None
        #: LSTM layers (``lstm`` only; the MLP always has three linear layers).
        encoder_num_layers: PositiveInt = 2
        #: dropout between LSTM layers (``lstm`` only).
        encoder_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

        @model_validator(mode="after")
        def _lstm_only(self) -> PTuning.Config:
            if self.encoder == "mlp":
                defaults = type(self).model_fields
                extra = [
                    name for name in ("encoder_num_layers", "encoder_dropout")
                    if getattr(self, name) != defaults[name].default
                ]
                if extra:
                    raise ValueError(f"{', '.join(extra)} only apply to encoder: lstm")
            return self

    def build(self, model: torch.nn.Module, layout: Layout) -> PromptEncoder:
        from lladapt.plugins.adapters.prompt_encoders import PromptEncoder

        cfg = self.config
        path = embeddings_path(model, layout)
        table = model.get_submodule(path).weight
        return PromptEncoder(
            cfg.num_virtual_tokens,
            table.shape[1],
            encoder=cfg.encoder,
            hidden_size=cfg.encoder_hidden_size or table.shape[1],
            lstm_layers=cfg.encoder_num_layers,
            dropout=cfg.encoder_dropout,
            embeddings_path=path,
            device=table.device,
            dtype=table.dtype,
        )

    def _peft_fields(self, model: torch.nn.Module, layout: Layout) -> dict[str, Any]:
        cfg = self.config
        width = model.get_submodule(embeddings_path(model, layout)).weight.shape[1]
        return {
            "token_dim": width,
            "encoder_reparameterization_type": cfg.encoder.upper(),
            "encoder_hidden_size": cfg.encoder_hidden_size or width,
            "encoder_num_layers": cfg.encoder_num_layers,
            "encoder_dropout": cfg.encoder_dropout,
        }

    @classmethod
    def from_peft(
        cls, peft_config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        if any(key.startswith(MODULE_NAME + ".") for key in tensors):
            return super().from_peft(peft_config, tensors)
        raise AdapterError(
            "this P-tuning folder was written by PEFT, which saves the virtual tokens the encoder "
            "produced but not the encoder, so it cannot be rebuilt as P-tuning. Its tokens load "
            "as prompt tuning (same outputs): set \"peft_type\": \"PROMPT_TUNING\" in its "
            "adapter_config.json"
        )
