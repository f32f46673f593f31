"""Mixture-of-experts serving: what a GPU holds and reads for an MoE model under a serving plan
(planner.serving.plan: tp, ep, dp_attention), separate from the dense formulas so that a dense
model is priced exactly as before.

Expected experts touched. T tokens each choose top-k of E routed experts; with uniform routing a
token misses a given expert with probability C(E-1, k) / C(E, k) = (E - k) / E = 1 - k/E, and
tokens route independently, so the expert is used by none of the T tokens with probability
(1 - k/E)^T and, by linearity of expectation, the batch touches
    n(T) = E (1 - (1 - k/E)^T)
distinct experts (n(1) = k; n(T) -> E as T grows). Per EP rank holding E / ep of them, the same
argument over the T tokens of the whole expert-parallel group gives (E / ep)(1 - (1 - k/E)^T).
A decode step reads from HBM only the experts its tokens touch (grouped-GEMM kernels skip the
experts with no token), so the routed-expert weights streamed per step per GPU are those
experts' bytes. Routing is assumed uniform (balanced); a hot expert would add an imbalance
factor not modelled here.

Tokens an EP rank computes: the group holds T = M ep / tp tokens (ep / tp replicas of M each);
T k expert-token pairs spread over ep ranks: M k / tp per GPU. With ep = 1 every TP rank runs all
M k pairs on its 1/tp slice of each expert.

MLA (DeepSeek-V2/V3, Kimi-K2). The KV cache keeps, per token and layer, the key/value latent and
the shared rope key: (kv_lora_rank + qk_rope_head_dim) elements, not per head. DeepSeek-V3:
61 x (512 + 64) = 35,136 elements per token, 35,136 B in fp8 (vs 2 x 61 x 128 x 192 = 3.0 M for
MHA with the same heads). Decode runs in the latent space (weight absorption: the per-head
key up-projection is folded into the query, the value up-projection applied after), so a decode
token reads its sequence's latents once for all heads; the absorbed projections have the shapes
of kv_b_proj (kv_lora -> heads x (nope + v)). Prefill up-projects the latents (kv_b_proj over the
prompt tokens) and runs ordinary attention with qk = nope + rope and v widths. The latent
down-projections (h -> q_lora, h -> kv_lora + rope) are replicated on every TP rank (vLLM's
ReplicatedLinear): each TP rank runs them on every token. With TP attention every TP rank holds
(and reads) every sequence's latent KV; with dp_attention a rank holds its 1/tp of the sequences.
"""

from __future__ import annotations

import math

from planner.llm.cost import moe_params
from planner.llm.moe_model import MoETransformer

ROUTER_BYTES = 2.0
"""Router weights stay in bf16 (fp8 checkpoints keep the gate unquantized)."""

DISPATCH_BYTES = {"bf16": 2.0, "fp8": 1.0 + 1.0 / 128.0}
"""Bytes per dispatched element: bf16, or fp8 with one scale per 128 elements
(../shared/reference/moe.md sec. 3)."""
COMBINE_BYTES = 2.0
"""Combine (expert outputs back to their tokens) travels in bf16."""


def expected_distinct_experts(num_experts: int, top_k: int, tokens: float) -> float:
    """n(T) = E (1 - (1 - k/E)^T): expected distinct experts touched by `tokens` tokens that each
    choose top-k of E uniformly (module doc); 0 for no tokens."""
    if tokens <= 0:
        return 0.0
    return num_experts * -math.expm1(tokens * math.log1p(-top_k / num_experts)) if top_k < num_experts \
        else float(num_experts)


def stage_moe_layers(model: MoETransformer, pp: int) -> list[int]:
    """MoE layers on each pipeline stage (layers split as planner.serving.memory.stage_layers)."""
    from planner.serving.memory import stage_layers

    flags = model.moe_layers
    out, start = [], 0
    for layers in stage_layers(model.num_layers, pp):
        out.append(sum(flags[start:start + layers]))
        start += layers
    return out


def matrices(model: MoETransformer) -> int:
    """Weight matrices of one FFN or expert: 3 gated (up, gate, down), 2 plain."""
    return 3 if model.gated_mlp else 2


def attention_tp(tp: int, dp_attention: bool) -> int:
    """GPUs the attention weights are split over."""
    return 1 if dp_attention else tp


def attention_gemm_shapes(model: MoETransformer, ta: int) -> list[tuple[float, float]]:
    """(K, N) of the attention GEMMs of a layer on one rank of an attention group of `ta`."""
    h, a = model.hidden_size, model.num_heads
    if model.mla is None:
        hd = model.dim_per_head
        kvh = max(model.kv_heads // ta, 1)
        return [(h, model.attention_width / ta + 2 * kvh * hd), (model.attention_output_width / ta, h)]
    x = model.mla
    qk = x.qk_nope_head_dim + x.qk_rope_head_dim
    heads = a / ta
    shapes = [(h, x.q_lora_rank + x.kv_lora_rank + x.qk_rope_head_dim)]  # fused down projections (replicated)
    if x.q_lora_rank:
        shapes.append((x.q_lora_rank, heads * qk))
    else:
        shapes[0] = (h, x.kv_lora_rank + x.qk_rope_head_dim)
        shapes.append((h, heads * qk))
    shapes.append((x.kv_lora_rank, heads * (x.qk_nope_head_dim + x.v_head_dim)))  # kv_b_proj (absorbed at decode)
    shapes.append((heads * x.v_head_dim, h))
    return shapes


def attention_weight_elements(model: MoETransformer, ta: int) -> float:
    """Attention weights held by one rank (elements), biases and MLA's latent norms included."""
    weights = sum(k * n for k, n in attention_gemm_shapes(model, ta))
    if model.mla is not None:
        weights += model.mla.q_lora_rank + model.mla.kv_lora_rank
    elif model.linear_bias:
        kvh = max(model.kv_heads // ta, 1)
        weights += model.attention_width / ta + 2 * kvh * model.dim_per_head + model.hidden_size
    return float(weights)


def kv_elements_per_token_layer(model: MoETransformer, ta: int) -> float:
    """KV-cache elements one token keeps per layer on one rank of an attention group of `ta`:
    MLA the latent and rope key (whole on every rank); GQA 2 x KV heads per rank x head dim."""
    if model.mla is not None:
        return float(moe_params.kv_cache_width(model))
    return 2.0 * max(model.kv_heads // ta, 1) * model.dim_per_head


def kv_cache_bytes_per_token(model: MoETransformer, kv_bytes: float) -> float:
    """KV-cache bytes one token occupies over the whole model (not replicated):
    MLA: layers x (kv_lora_rank + qk_rope_head_dim) x dtype bytes (DeepSeek-V3: 61 x 576);
    GQA: 2 x layers x kv_heads x head_dim x dtype bytes."""
    return model.num_layers * float(moe_params.kv_cache_width(model)) * kv_bytes


def expert_elements(model: MoETransformer) -> float:
    """Weights of one routed expert (elements)."""
    return moe_params.expert_params(model)


def layer_weight_bytes(model: MoETransformer, tp: int, ep: int, dp_attention: bool, moe_layers: int,
                       dense_layers: int, weight_bytes: float, norm_bytes: float) -> float:
    """Weights one GPU holds for `moe_layers` MoE and `dense_layers` dense layers:
    attention (split over the attention group), norms (bf16), dense MLPs and shared experts
    split over tp, the router (bf16, replicated), the routed experts (E / ep whole experts with
    ep > 1; 1/tp of each of the E with ep = 1)."""
    ta = attention_tp(tp, dp_attention)
    layers = moe_layers + dense_layers
    total = layers * (attention_weight_elements(model, ta) * weight_bytes + moe_params.norm_params(model) * norm_bytes)
    if dense_layers:
        total += dense_layers * moe_params.ffn_params(model, model.ffn_hidden_size) / tp * weight_bytes
    if moe_layers:
        shared = moe_params.shared_expert_params(model) / tp
        routed = (model.moe.num_experts / ep if ep > 1 else model.moe.num_experts / tp) * expert_elements(model)
        total += moe_layers * ((shared + routed) * weight_bytes + moe_params.router_params(model) * ROUTER_BYTES)
    return total


def workspace_elements_per_token(model: MoETransformer, tp: int, dp_attention: bool) -> float:
    """Activation elements per token of a pass on one GPU: input, residual and normed hidden
    state (3h), attention projections (MLA: the latents and the per-head q, k, v; GQA: QKV), and
    the larger of a dense MLP's intermediates (matrices x f / tp) and an MoE layer's (shared:
    matrices x f_s / tp; routed: k / tp expert-token pairs per pass token, each with its
    intermediates and its dispatched and combined copy, 2h)."""
    ta = attention_tp(tp, dp_attention)
    h, m = model.hidden_size, matrices(model)
    if model.mla is not None:
        x = model.mla
        attention = moe_params.latent_width(model) + model.num_heads / ta * (
            x.qk_nope_head_dim + x.qk_rope_head_dim + x.qk_nope_head_dim + x.v_head_dim)
    else:
        attention = model.attention_width / ta + 2 * max(model.kv_heads // ta, 1) * model.dim_per_head
    dense = m * model.ffn_hidden_size / tp if model.ffn_hidden_size else 0.0
    moe = (m * model.moe.shared_ffn_hidden_size / tp
           + model.moe.top_k / tp * (m * model.moe.ffn_hidden_size + 2 * h))
    return 3 * h + attention + max(dense, moe)
