"""GPT-J: separate q/k/v/out projections (no biases) and an MLP ``fc_in`` / ``fc_out``.

Attention and MLP run in parallel from the same layer norm output; rotary embeddings cover only
the first ``rotary_dim`` dimensions of each head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lladapt import Backbone, LayerLayout, Layout

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


class GPTJBackbone(Backbone):
    """GPT-J: q/k/v/out_proj attention, MLP fc_in / fc_out, partial rotary embeddings."""

    name = "gptj"
    aliases = ("gpt-j",)
    model_types = ("gptj",)
    presets = {
        # EleutherAI/gpt-j-6b: untied output head with a bias
        "gpt-j-6b": dict(
            model_type="gptj", n_embd=4096, n_layer=28, n_head=16, rotary_dim=64,
            vocab_size=50400, n_positions=2048, activation_function="gelu_new",
            layer_norm_epsilon=1e-5, bos_token_id=50256, eos_token_id=50256,
            tie_word_embeddings=False,
        ),
    }

    def layout(self, hf_config: PretrainedConfig) -> Layout:
        hidden, heads = hf_config.hidden_size, hf_config.num_attention_heads
        return Layout(
            layers="transformer.h",
            num_layers=hf_config.num_hidden_layers,
            hidden_size=hidden,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            head_dim=hidden // heads,
            # n_inner None means the classic 4x width
            intermediate_size=getattr(hf_config, "n_inner", None) or 4 * hidden,
            vocab_size=hf_config.vocab_size,
            layer=_LAYER,
            embeddings="transformer.wte",
        )
