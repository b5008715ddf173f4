"""BLOOM: a fused query/key/value projection and a 4x MLP, ALiBi positions (no rotary).

Each decoder layer: ``self_attention.query_key_value`` (fused, interleaved per head),
``self_attention.dense`` and ``mlp.dense_h_to_4h`` / ``mlp.dense_4h_to_h``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lladapt import LayerLayout
from lladapt.plugins.backbones.decoder import DecoderBackbone

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig

_LAYER = LayerLayout(
    projections={
        "qkv": "self_attention.query_key_value",
        "o": "self_attention.dense",
        "up": "mlp.dense_h_to_4h",
        "down": "mlp.dense_4h_to_h",
    },
    attention="self_attention",
    mlp="mlp",
    attention_in=("qkv",),
    mlp_in=("up",),
)


class BloomBackbone(DecoderBackbone):
    """BLOOM: fused qkv (query_key_value), dense, MLP dense_h_to_4h / dense_4h_to_h."""

    name = "bloom"
    model_types = ("bloom",)
    layers_path = "transformer.h"
    embeddings_path = "transformer.word_embeddings"
    layer_layout = _LAYER
    presets = {
        # bigscience/bloom-7b1: output head tied to the input embeddings
        "bloom-7b1": dict(
            model_type="bloom", hidden_size=4096, n_layer=30, n_head=32, vocab_size=250880,
            layer_norm_epsilon=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=3,
            tie_word_embeddings=True,
        ),
    }

    def intermediate_size(self, hf_config: PretrainedConfig) -> int:
        return 4 * hf_config.hidden_size  # fixed by the architecture, not a config field
