"""``DecoderBackbone``: a backbone described by data, for the common decoder-only layout.

Most causal LMs in transformers have one ``nn.ModuleList`` of decoder layers whose attention and
MLP projections sit at fixed paths, and a config that names hidden size, layers and heads the
standard way (transformers' ``attribute_map`` translates ``n_embd``/``n_layer``/``n_head``). For
those a backbone is three declarations and, where the config says it differently, one method::

    class MyBackbone(DecoderBackbone):
        name = "myfamily"
        model_types = ("myfamily",)
        layers_path = "model.layers"
        embeddings_path = "model.embed_tokens"
        layer_layout = LayerLayout(projections={...}, attention="attn", mlp="mlp", ...)

Families whose sizes do not follow this pattern implement :meth:`Backbone.layout` directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from lladapt import Backbone, LayerLayout, Layout

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig


class DecoderBackbone(Backbone):
    """A backbone whose layout is fixed module paths plus sizes read from the HF config."""

    #: path of the decoder layer list, from the causal LM (``model.layers``).
    layers_path: ClassVar[str]
    #: path of the input token embeddings (``model.embed_tokens``).
    embeddings_path: ClassVar[str]
    #: where the projections and blocks of one decoder layer are.
    layer_layout: ClassVar[LayerLayout]

    def intermediate_size(self, hf_config: PretrainedConfig) -> int:
        """The MLP width. Default: ``intermediate_size``; families that name it differently (or
        fix it at 4x hidden) override this."""
        return hf_config.intermediate_size

    def layout(self, hf_config: PretrainedConfig) -> Layout:
        hidden, heads = hf_config.hidden_size, hf_config.num_attention_heads
        return Layout(
            layers=self.layers_path,
            num_layers=hf_config.num_hidden_layers,
            hidden_size=hidden,
            num_attention_heads=heads,
            # grouped-query configs say how many key/value heads; the others have one per head
            num_key_value_heads=getattr(hf_config, "num_key_value_heads", None) or heads,
            # explicit on newer configs (it need not be hidden / heads)
            head_dim=getattr(hf_config, "head_dim", None) or hidden // heads,
            intermediate_size=self.intermediate_size(hf_config),
            vocab_size=hf_config.vocab_size,
            layer=self.layer_layout,
            embeddings=self.embeddings_path,
        )
