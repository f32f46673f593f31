"""Parameter counts of mixture-of-experts models: total, active per token, per layer kind.

Conventions (as the vendors count): untied embedding and head each V*h; attention with MLA
counts its latent projections and their norms; a routed expert and a shared expert are FFNs of
their widths (3 matrices when gated); the router is h*E per MoE layer; norms are 2h per layer
plus the final h. Multi-token-prediction modules (DeepSeek-V3) are counted apart, as its
671 B excludes them: each is a 2h -> h projection, two norms and one MoE layer (embedding and
head shared with the main model).
"""

from __future__ import annotations

from planner.llm.moe_model import MoETransformer


def attention_params(model: MoETransformer) -> float:
    """Attention weights plus MLA's latent norms and any biases."""
    params = attention_weight_params(model)
    if model.mla is not None:
        params += model.mla.q_lora_rank + model.mla.kv_lora_rank
    elif model.linear_bias:
        params += model.attention_width + 2 * model.kv_width + model.hidden_size
    return params


def attention_weight_params(model: MoETransformer) -> float:
    """The matrices of attention (each weight is 2 FLOPs per token)."""
    h, a = model.hidden_size, model.num_heads
    if model.mla is not None:
        x = model.mla
        qk = x.qk_nope_head_dim + x.qk_rope_head_dim
        q = h * x.q_lora_rank + x.q_lora_rank * a * qk if x.q_lora_rank else h * a * qk  # down, up
        kv = h * (x.kv_lora_rank + x.qk_rope_head_dim)  # down to the latent and the shared rope key
        kv += x.kv_lora_rank * a * (x.qk_nope_head_dim + x.v_head_dim)  # up to per-head keys and values
        return float(q + kv + a * x.v_head_dim * h)
    d, g = model.dim_per_head, model.kv_heads
    return float(h * a * d + 2 * h * g * d + a * d * h)


def mla_up_projection_params(model: MoETransformer) -> float:
    """What `recompute_modules: mla_up_proj` re-runs (Megatron-Core multi_latent_attention.py
    qkv_up_proj_and_rope_apply): the key/value latent to per-head keys and values, and the
    per-head queries, from the query latent (linear_q_up_proj) or, without one, from the hidden
    state (linear_q_proj)."""
    x, a = model.mla, model.num_heads
    qk = x.qk_nope_head_dim + x.qk_rope_head_dim
    up = x.kv_lora_rank * a * (x.qk_nope_head_dim + x.v_head_dim)
    up += (x.q_lora_rank if x.q_lora_rank else model.hidden_size) * a * qk
    return float(up)


def ffn_params(model: MoETransformer, width: int, bias: bool = False) -> float:
    """One FFN (a dense layer's, an expert's) of intermediate width `width`."""
    h = model.hidden_size
    matrices = 3 if model.gated_mlp else 2
    params = matrices * h * width
    if bias:
        params += (matrices - 1) * width + h
    return float(params)


def router_params(model: MoETransformer) -> float:
    return float(model.hidden_size * model.moe.num_experts)


def norm_params(model: MoETransformer) -> float:
    return float(2 * model.hidden_size)


def latent_width(model: MoETransformer) -> int:
    """Width of MLA's latents per token (query latent, key/value latent, rope key); 0 without MLA."""
    if model.mla is None:
        return 0
    return model.mla.q_lora_rank + model.mla.kv_lora_rank + model.mla.qk_rope_head_dim


def kv_cache_width(model: MoETransformer) -> int:
    """Elements cached per token per layer for decoding: MLA keeps its key/value latent and the
    shared rope key; MHA/GQA keep every key and value head."""
    if model.mla is not None:
        return model.mla.kv_lora_rank + model.mla.qk_rope_head_dim
    return 2 * model.kv_width


def expert_params(model: MoETransformer) -> float:
    """One routed expert."""
    return ffn_params(model, model.moe.ffn_hidden_size, model.moe.bias)


def shared_expert_params(model: MoETransformer) -> float:
    """All shared experts of one MoE layer."""
    width = model.moe.shared_ffn_hidden_size
    return ffn_params(model, width, model.moe.bias) if width else 0.0


def moe_layer_params(model: MoETransformer, active: bool = False) -> float:
    """An MoE layer: attention, norms, router, experts (all, or the top-k a token uses), shared."""
    experts = model.moe.top_k if active else model.moe.num_experts
    return (attention_params(model) + norm_params(model) + router_params(model)
            + experts * expert_params(model) + shared_expert_params(model))


def dense_layer_params(model: MoETransformer) -> float:
    assert model.ffn_hidden_size is not None
    return attention_params(model) + norm_params(model) + ffn_params(model, model.ffn_hidden_size)


def embedding_params(model: MoETransformer) -> float:
    return float(model.vocab_size * model.hidden_size)


def head_params(model: MoETransformer) -> float:
    """Output projection (0 when tied) and the final norm."""
    return (0.0 if model.tied_embeddings else float(model.vocab_size * model.hidden_size)) + model.hidden_size


def total_params(model: MoETransformer) -> float:
    """Every parameter of the main model (multi-token prediction excluded)."""
    moe = model.num_moe_layers
    dense = model.num_layers - moe
    layers = moe * moe_layer_params(model) + (dense * dense_layer_params(model) if dense else 0.0)
    return embedding_params(model) + head_params(model) + layers


def active_params(model: MoETransformer) -> float:
    """Parameters one token passes through (embedding and head included)."""
    moe = model.num_moe_layers
    dense = model.num_layers - moe
    layers = moe * moe_layer_params(model, active=True) + (dense * dense_layer_params(model) if dense else 0.0)
    return embedding_params(model) + head_params(model) + layers


def mtp_params(model: MoETransformer) -> float:
    """The multi-token-prediction modules (their embedding and head are the main model's)."""
    h = model.hidden_size
    per_module = 2 * h * h + 2 * h + moe_layer_params(model)
    return float(model.mtp_layers * per_module)
