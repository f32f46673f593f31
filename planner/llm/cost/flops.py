"""Parameter and FLOP counts per layer kind (dense decoder transformer).

Conventions (Narayanan et al. SC'21, eq. 3; Korthikanti et al. MLSys'23, sec. 6; PaLM
appendix B): a GEMM of (M x K) by (K x N) costs 2*M*N*K FLOPs; the backward pass costs twice
the forward (input and weight gradients). *Model* FLOPs count forward + backward with full
(non-causal) attention scores and no recompute: they define MFU. *Hardware* FLOPs add the
recompute forward pass (HFU).
"""

from __future__ import annotations

from planner.llm.model import DenseTransformer


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
    """Forward FLOPs per token of the block's weight GEMMs (2 per weight)."""
    h, aw, kvw, f = model.hidden_size, model.attention_width, model.kv_width, model.ffn_hidden_size
    up = 2 if model.gated_mlp else 1
    return 2.0 * (h * (aw + 2 * kvw) + aw * h + (up + 1) * h * f)


def attention_core_flops_per_token(model: DenseTransformer, context_tokens: float) -> float:
    """Forward FLOPs per query token of QK^T and AV against `context_tokens` keys."""
    return 4.0 * context_tokens * model.attention_width


def head_flops_per_token(model: DenseTransformer) -> float:
    """Forward FLOPs per token of the LM head GEMM."""
    return 2.0 * model.hidden_size * model.vocab_size


def model_flops_per_token(model: DenseTransformer, seq_len: int) -> float:
    """Model FLOPs per trained token (forward + backward, full attention, no recompute).

    For GPT-3 175B at s=2048 this is 6*N*(1 + s/(6h) + ...) ~ 1.09e12 (Narayanan eq. 3 / B*s).
    """
    forward = model.num_layers * (
        layer_matmul_flops_per_token(model) + attention_core_flops_per_token(model, seq_len)
    ) + head_flops_per_token(model)
    return 3.0 * forward


def hardware_flops_per_token(model: DenseTransformer, seq_len: int, recompute: str) -> float:
    """Model FLOPs plus the recompute pass: full re-runs each block's forward, selective only
    the attention core (Korthikanti et al. sec. 6)."""
    per_layer_forward = layer_matmul_flops_per_token(model) + attention_core_flops_per_token(model, seq_len)
    extra = 0.0
    if recompute == "full":
        extra = model.num_layers * per_layer_forward
    elif recompute == "selective":
        extra = model.num_layers * attention_core_flops_per_token(model, seq_len)
    return model_flops_per_token(model, seq_len) + extra
