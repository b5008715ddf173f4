"""OPT: q/k/v/out projections with biases, and an MLP whose ``fc1`` / ``fc2`` sit directly on the
decoder layer (there is no MLP submodule, so the layout's ``mlp`` path is None)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lladapt import LayerLayout
from lladapt.plugins.backbones.decoder import DecoderBackbone

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig

_LAYER = LayerLayout(
    projections={
        "q": "self_attn.q_proj",
        "k": "self_attn.k_proj",
        "v": "self_attn.v_proj",
        "o": "self_attn.out_proj",
        "up": "fc1",
        "down": "fc2",
    },
    attention="self_attn",
    mlp=None,
    attention_in=("q", "k", "v"),
    mlp_in=("up",),
)


class OPTBackbone(DecoderBackbone):
    """OPT: q/k/v/out_proj attention, MLP fc1 / fc2 directly on the decoder layer."""

    name = "opt"
    model_types = ("opt",)
    layers_path = "model.decoder.layers"
    embeddings_path = "model.decoder.embed_tokens"
    layer_layout = _LAYER
    presets = {
        # facebook/opt-6.7b: output head tied to the input embeddings, learned positions
        "opt-6.7b": dict(
            model_type="opt", hidden_size=4096, ffn_dim=16384, num_hidden_layers=32,
            num_attention_heads=32, vocab_size=50272, max_position_embeddings=2048,
            word_embed_proj_dim=4096, do_layer_norm_before=True, activation_function="relu",
            pad_token_id=1, bos_token_id=2, eos_token_id=2, tie_word_embeddings=True,
        ),
    }

    def intermediate_size(self, hf_config: PretrainedConfig) -> int:
        return hf_config.ffn_dim
