"""GPT-J: separate q/k/v/out projections (no biases) and an MLP ``fc_in`` / ``fc_out``.

Attention and MLP run in parallel from the same layer norm output; rotary embeddings cover only
the first ``rotary_dim`` dimensions of each head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lladapt import LayerLayout
from lladapt.plugins.backbones.decoder import DecoderBackbone

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig

_LAYER = LayerLayout(
    projections={
        "q": "attn.q_proj",
        "k": "attn.k_proj",
        "v": "attn.v_proj",
        "o": "attn.out_proj",
        "up": "mlp.fc_in",
        "down": "mlp.fc_out",
    },
    attention="attn",
    mlp="mlp",
    attention_in=("q", "k", "v"),
    mlp_in=("up",),
)


class GPTJBackbone(DecoderBackbone):
    """GPT-J: q/k/v/out_proj attention, MLP fc_in / fc_out, partial rotary embeddings."""

    name = "gptj"
    aliases = ("gpt-j",)
    model_types = ("gptj",)
    layers_path = "transformer.h"
    embeddings_path = "transformer.wte"
    layer_layout = _LAYER
    presets = {
        # EleutherAI/gpt-j-6b: untied output head with a bias
        "gpt-j-6b": dict(
            model_type="gptj", n_embd=4096, n_layer=28, n_head=16, rotary_dim=64,
            vocab_size=50400, n_positions=2048, activation_function="gelu_new",
            layer_norm_epsilon=1e-5, bos_token_id=50256, eos_token_id=50256,
            tie_word_embeddings=False,
        ),
    }

    def intermediate_size(self, hf_config: PretrainedConfig) -> int:
        return getattr(hf_config, "n_inner", None) or 4 * hf_config.hidden_size  # None: 4x
