"""LLaMA, and the families that share its module tree (Mistral, Qwen2).

Each decoder layer: ``self_attn.{q,k,v,o}_proj`` (grouped-query attention: k/v may have fewer
heads than q) and a gated MLP ``mlp.{gate,up,down}_proj``.
"""

from __future__ import annotations

from lladapt import LayerLayout
from lladapt.plugins.backbones.decoder import DecoderBackbone

_LAYER = LayerLayout(
    projections={
        "q": "self_attn.q_proj",
        "k": "self_attn.k_proj",
        "v": "self_attn.v_proj",
        "o": "self_attn.o_proj",
        "gate": "mlp.gate_proj",
        "up": "mlp.up_proj",
        "down": "mlp.down_proj",
    },
    attention="self_attn",
    mlp="mlp",
    attention_in=("q", "k", "v"),
    mlp_in=("gate", "up"),
)

# The original LLaMA checkpoints (huggyllama/llama-7b, huggyllama/llama-13b): untied output head.
_LLAMA_V1 = dict(
    model_type="llama", vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-6,
    hidden_act="silu", tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
)


class LlamaBackbone(DecoderBackbone):
    """LLaMA (and Mistral, Qwen2): q/k/v/o attention, gated MLP gate/up/down, grouped-query."""

    name = "llama"
    model_types = ("llama", "mistral", "qwen2")
    layers_path = "model.layers"
    embeddings_path = "model.embed_tokens"
    layer_layout = _LAYER
    presets = {
        "llama-7b": dict(
            _LLAMA_V1, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=32,
        ),
        "llama-13b": dict(
            _LLAMA_V1, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
            num_attention_heads=40, num_key_value_heads=40,
        ),
    }
