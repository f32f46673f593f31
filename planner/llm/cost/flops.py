"""Parameter and FLOP counts per layer kind (dense and mixture-of-experts decoders).

Conventions (Narayanan et al. SC'21, eq. 3; Korthikanti et al. MLSys'23, sec. 6; PaLM
appendix B): a GEMM of (M x K) by (K x N) costs 2*M*N*K FLOPs; the backward pass costs twice
the forward (input and weight gradients). *Model* FLOPs count forward + backward with full
(non-causal) attention scores and no recompute: they define MFU. *Hardware* FLOPs add the
recompute forward pass (HFU). MoE layers count what a token runs through: the router, its
top-k experts and the shared experts (the FLOPs of its active parameters).
"""

from __future__ import annotations

from planner.llm.cost import moe_params
from planner.llm.model import DenseTransformer
from planner.llm.moe_model import MoETransformer

Decoder = DenseTransformer | MoETransformer


def attention_params(model: DenseTransformer) -> float:
    """Q, K, V and output projections (+ biases)."""
    h, aw, kvw = model.hidden_size, model.attention_width, model.kv_width
    weights = h * aw + 2 * h * kvw + aw * h
    biases = (aw + 2 * kvw + h) if model.linear_bias else 0
    return float(weights + biases)


def mlp_params(model: DenseTransformer) -> float:
    """Up (and gate) and down projections (+ biases)."""
    h, f = model.hidden_size, model.ffn_hidden_size
    up = 2 if model.gated_mlp else 1
    weights = (up + 1) * h * f
    biases = (up * f + h) if model.linear_bias else 0
    return float(weights + biases)


def norm_params(model: DenseTransformer) -> float:
    """One LayerNorm (scale + bias) or RMSNorm (scale only)."""
    return float(model.hidden_size * (2 if model.linear_bias else 1))


def layer_params(model: DenseTransformer) -> float:
    """One transformer block: attention, MLP and two norms."""
    return attention_params(model) + mlp_params(model) + 2 * norm_params(model)


def embedding_params(model: DenseTransformer) -> float:
    """Input embedding (+ learned positions)."""
    positions = model.max_seq_len * model.hidden_size if model.position_embedding == "learned" else 0
    return float(model.vocab_size * model.hidden_size + positions)


def head_params(model: DenseTransformer) -> float:
    """Final norm + LM head (the head is shared with the embedding when tied)."""
    head = 0 if model.tied_embeddings else model.vocab_size * model.hidden_size
    return float(head + norm_params(model))


def total_params(model: DenseTransformer) -> float:
    """All parameters, counting a tied embedding once."""
    return model.num_layers * layer_params(model) + embedding_params(model) + head_params(model)


def layer_matmul_flops_per_token(model: DenseTransformer) -> float:
    """Forward FLOPs per token of a dense block's weight GEMMs (2 per weight)."""
    return attention_matmul_flops_per_token(model) + dense_ffn_matmul_flops_per_token(model)


def attention_matmul_flops_per_token(model: Decoder) -> float:
    """Forward FLOPs per token of the attention projections (QKV or MLA's latents, output)."""
    if model.family == "moe":
        return 2.0 * moe_params.attention_weight_params(model)
    h, aw, kvw = model.hidden_size, model.attention_width, model.kv_width
    return 2.0 * (h * (aw + 2 * kvw) + aw * h)


def dense_ffn_matmul_flops_per_token(model: Decoder) -> float:
    """Forward FLOPs per token of a dense FFN (0 for an MoE model without dense layers)."""
    f = model.ffn_hidden_size or 0
    return 2.0 * (3 if model.gated_mlp else 2) * model.hidden_size * f


def moe_ffn_matmul_flops_per_token(model: MoETransformer) -> float:
    """Forward FLOPs per token of an MoE FFN: router, top-k routed experts, shared experts."""
    moe, h = model.moe, model.hidden_size
    matrices = 3 if model.gated_mlp else 2
    routed = moe.top_k * moe.ffn_hidden_size
    return 2.0 * (h * moe.num_experts + matrices * h * (routed + moe.shared_ffn_hidden_size))


def attention_core_flops_per_token(model: Decoder, context_tokens: float) -> float:
    """Forward FLOPs per query token of QK^T and AV against `context_tokens` keys."""
    return 2.0 * context_tokens * (model.attention_width + model.attention_output_width)


def block_forward_flops_per_token(model: Decoder, seq_len: int) -> float:
    """Forward FLOPs per token of all blocks (model FLOP convention: full attention)."""
    attention = attention_matmul_flops_per_token(model) + attention_core_flops_per_token(model, seq_len)
    if model.family != "moe":
        return model.num_layers * (attention + dense_ffn_matmul_flops_per_token(model))
    moe = model.num_moe_layers
    dense = model.num_layers - moe
    return (model.num_layers * attention + dense * dense_ffn_matmul_flops_per_token(model)
            + moe * moe_ffn_matmul_flops_per_token(model))


def mtp_forward_flops_per_token(model: Decoder, seq_len: int) -> float:
    """Forward FLOPs per token of the multi-token-prediction modules: each a 2h -> h projection,
    an MoE block and the shared LM head."""
    layers = getattr(model, "mtp_layers", 0)
    if not layers:
        return 0.0
    h = model.hidden_size
    block = (attention_matmul_flops_per_token(model) + attention_core_flops_per_token(model, seq_len)
             + moe_ffn_matmul_flops_per_token(model))
    return layers * (2.0 * 2 * h * h + block + head_flops_per_token(model))


def head_flops_per_token(model: Decoder) -> float:
    """Forward FLOPs per token of the LM head GEMM."""
    return 2.0 * model.hidden_size * model.vocab_size


def model_flops_per_token(model: Decoder, seq_len: int) -> float:
    """Model FLOPs per trained token (forward + backward, full attention, no recompute).

    For GPT-3 175B at s=2048 this is 6*N*(1 + s/(6h) + ...) ~ 1.09e12 (Narayanan eq. 3 / B*s).
    """
    forward = block_forward_flops_per_token(model, seq_len) + head_flops_per_token(model)
    return 3.0 * (forward + mtp_forward_flops_per_token(model, seq_len))


def hardware_flops_per_token(model: Decoder, seq_len: int, recompute: str,
                             modules: tuple[str, ...] = ("core_attn",)) -> float:
    """Model FLOPs plus the recompute pass: full re-runs each block's forward, selective the
    parts in `modules` (Plan.recompute_modules): the attention core (Korthikanti et al. sec. 6),
    the dense MLPs, MLA's up-projections; norms and activations add no matmul FLOPs."""
    extra = 0.0
    if recompute == "full":
        extra = block_forward_flops_per_token(model, seq_len)
    elif recompute == "selective":
        if "core_attn" in modules:
            extra += model.num_layers * attention_core_flops_per_token(model, seq_len)
        if "mlp" in modules:
            dense_layers = model.num_layers - (model.num_moe_layers if model.family == "moe" else 0)
            extra += dense_layers * dense_ffn_matmul_flops_per_token(model)
        if "mla_up_proj" in modules and model.family == "moe" and model.mla is not None:
            extra += model.num_layers * 2.0 * moe_params.mla_up_projection_params(model)
    return model_flops_per_token(model, seq_len) + extra
