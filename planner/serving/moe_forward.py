"""One forward pass of one pipeline stage of a mixture-of-experts model on one GPU
(planner.serving.forward prices dense stages; this module follows its conventions: roofline
GEMMs, memory-bound ops at the HBM fraction, collectives from planner.core.collectives).

A pass carries M tokens of the replica (the micro-batch's decode tokens plus any prompt tokens).
With TP attention every TP rank runs attention on all M tokens with its 1/tp of the heads; with
dp_attention each rank runs M / tp tokens with all heads. Per layer on one GPU:

- attention GEMMs (planner.serving.moe.attention_gemm_shapes; MLA's down projections replicated),
  decode attention reading the cached KV: GQA as the dense model; MLA in the latent space, a
  roofline of the latent bytes (context x (kv_lora + rope) x KV bytes per decode token) against
  2 x context x heads x (2 kv_lora + rope) FLOPs at the fused-attention rate (with 128 heads the
  latent read is shared by all heads: compute can bind); prefill flash attention as dense;
- a dense layer: the MLP split over tp, on all M tokens;
- an MoE layer: the router (h x E, bf16, with the top-k) as a memory-bound op on the tokens of
  the rank; the shared experts split over tp on all M tokens; the routed experts as two grouped
  GEMMs (up(+gate), down), a roofline of 2 x pairs x (matrices h f_e / etp) FLOPs against the
  bytes of the experts touched (planner.serving.moe.expected_distinct_experts) plus the pairs'
  inputs and outputs, where pairs = M k (ep = 1, on a 1/tp slice of each expert) or M k / tp
  (ep > 1, whole experts); with one token this reads exactly the k experts it chose;
- communication, per layer: TP attention: two all-reduces of M x h (bf16) over the TP group, as
  the dense model (the combined expert outputs of a rank's tokens are added to the shared
  experts' partial sums before the second one); dp_attention: an all-gather of the tokens over
  the TP group before the MLP and a reduce-scatter after (M x h bytes each). With ep = tp the
  expert group is the TP group, which already holds every token of the replica before the MLP
  (replicated by TP attention, gathered with dp_attention): each GPU runs its own experts on the
  tokens routed to them and the outputs join the MLP's all-reduce (reduce-scatter), with no
  all-to-all (vLLM's expert parallelism without DP). Per MoE layer with ep > tp: the dispatch
  all-to-all (each GPU sends its M / tp tokens' k copies, M k h / tp x dispatch bytes, S / ep to
  each member of the group) and the combine all-to-all (the same in bf16), over the tiers the
  group spans (planner.core.collectives.all_to_all_time_by_tier: the slowest tier; at decode
  sizes the per-collective latency dominates);
- memory-bound ops per token as the dense model (norms, residual adds, rope on the rope part,
  MLA's two latent norms, the activation on the intermediates, fp8/fp4 casts of GEMM inputs).
The LM head is vocabulary-parallel over tp with the all-gather of the logits, as dense.
"""

from __future__ import annotations

import math

from planner.core import kernels
from planner.core.collectives import all_to_all_time_by_tier, collective_time_by_tier, members_per_tier
from planner.serving import moe
from planner.serving.forward import ACTIVATION_BYTES, PassCost, PassLoad, _gemm_s, tp_members
from planner.serving.problem import ServingProblem


def ep_members(problem: ServingProblem, tp: int, pp: int, ep: int) -> list:
    """Members of an expert-parallel group per tier: tp consecutive ranks (the TP group) times
    ep / tp replicas, which lie tp x pp ranks apart (TP innermost, then PP, then DP)."""
    return members_per_tier(problem.cluster, [tp, ep // tp], [1, tp * pp])


def _expert_gemm_s(problem: ServingProblem, pairs: float, touched: float, etp: int, precision: str,
                   input_bytes: float) -> float:
    """The routed experts of one MoE layer on one GPU: two grouped GEMMs over `pairs`
    expert-token pairs, reading the weights of `touched` experts (1/etp of each)."""
    if pairs <= 0:
        return 0.0
    model, device = problem.model, problem.cluster.device
    h, f, m = model.hidden_size, model.moe.ffn_hidden_size / etp, moe.matrices(model)
    compute = kernels.gemm_time_s(2.0 * pairs * m * h * f, 2, device, precision)
    io = pairs * (h * input_bytes + (m - 1) * f * ACTIVATION_BYTES + f * input_bytes + h * ACTIVATION_BYTES)
    memory = kernels.memory_bound_time_s(touched * m * h * f * problem.task.weight_bytes + io, device)
    return float(max(compute, memory))


def moe_pass_cost(problem: ServingProblem, tp: int, pp: int, ep: int, dp_attention: bool, layers: int,
                  moe_layers: int, first: bool, last: bool, load: PassLoad) -> PassCost:
    """One pass of `load` (the replica's micro-batch) through a stage of `layers` layers, of
    which `moe_layers` are MoE, on one GPU (module doc); with the engine's two_batch_overlap and
    an all-to-all to hide, the pass as two halves whose expert all-to-alls overlap each other's
    compute (overlapped_pass_cost)."""
    if problem.task.engine.two_batch_overlap and ep > tp and moe_layers and load.tokens >= 2:
        return overlapped_pass_cost(problem, tp, pp, ep, dp_attention, layers, moe_layers, first, last, load)
    return _moe_pass_cost(problem, tp, pp, ep, dp_attention, layers, moe_layers, first, last, load)


def half_load(load: PassLoad) -> PassLoad:
    """One of the two micro-batches a pass splits into: half of every kind of token."""
    return PassLoad(decode_seqs=load.decode_seqs / 2.0, decode_context_tokens=load.decode_context_tokens,
                    prefill_tokens=load.prefill_tokens / 2.0, prefill_pairs=load.prefill_pairs / 2.0,
                    logit_seqs=load.logit_seqs / 2.0)


def overlapped_pass_cost(problem: ServingProblem, tp: int, pp: int, ep: int, dp_attention: bool, layers: int,
                         moe_layers: int, first: bool, last: bool, load: PassLoad) -> PassCost:
    """Two-batch overlap (SGLang's --enable-two-batch-overlap, vLLM's --enable-dbo, the dual
    micro-batch overlap of DeepSeek's inference system): the pass runs as two micro-batches of half
    the tokens, and while one waits for its dispatch or combine all-to-all the other computes.
    Each half is priced as a pass of its own (so the weights are read twice: at decode sizes the
    split costs HBM time), the compute and TP collectives of both halves add up, and of the two
    halves' all-to-all time only what the MoE layers' compute cannot cover is exposed -- per MoE
    layer two alternating micro-batches take max(compute, all-to-all) of both halves, so over the
    stage
        ep_comm = max(0, all-to-all of both halves - compute of both halves x moe_layers / layers)
    (the compute taken as spread evenly over the stage's layers)."""
    both = _moe_pass_cost(problem, tp, pp, ep, dp_attention, layers, moe_layers, first, last,
                          half_load(load)).scaled(2.0)
    compute = both.gemm + both.attention + both.elementwise + both.lm_head
    both.ep_comm = max(0.0, both.ep_comm - compute * moe_layers / layers)
    both.tp_comm = sum(both.tp_by_tier)
    return both


def _moe_pass_cost(problem: ServingProblem, tp: int, pp: int, ep: int, dp_attention: bool, layers: int,
                   moe_layers: int, first: bool, last: bool, load: PassLoad) -> PassCost:
    model, task, cluster = problem.model, problem.task, problem.cluster
    device = cluster.device
    h = model.hidden_size
    dense_layers = layers - moe_layers
    tokens = load.tokens
    ta = moe.attention_tp(tp, dp_attention)
    share = 1.0 / tp if dp_attention else 1.0  # of the replica's tokens this rank's attention runs
    a_tokens = tokens * share
    precision = task.gemm_precision
    low_precision = precision in ("fp8", "fp4")
    input_bytes = 1.0 if low_precision else ACTIVATION_BYTES
    m = moe.matrices(model)

    def gemm(tok: float, shapes) -> float:
        return sum(_gemm_s(problem, tok, k, n, precision, task.weight_bytes, input_bytes) for k, n in shapes) \
            if tok > 0 else 0.0

    # Attention (every layer).
    attention_gemm = gemm(a_tokens, moe.attention_gemm_shapes(model, ta))
    kv_elements = moe.kv_elements_per_token_layer(model, ta)
    decode_seqs = load.decode_seqs * share
    if model.mla is not None:
        x = model.mla
        latent = x.kv_lora_rank + x.qk_rope_head_dim
        reads = decode_seqs * load.decode_context_tokens * latent * task.kv_bytes
        flops = 2.0 * decode_seqs * load.decode_context_tokens * (model.num_heads / ta) * (latent + x.kv_lora_rank)
        attention = float(max(kernels.memory_bound_time_s(reads + a_tokens * latent * task.kv_bytes, device),
                              kernels.flash_attention_time_s(flops, device)[0]))
    else:
        kv_per_token = kv_elements * task.kv_bytes
        kvh = max(model.kv_heads // ta, 1)
        factor = (model.num_heads / ta) / kvh if task.engine.decode_attention == "per_query_head" else 1.0
        traffic = decode_seqs * load.decode_context_tokens * kv_per_token * factor + a_tokens * kv_per_token
        attention = float(kernels.memory_bound_time_s(traffic, device))
    if load.prefill_pairs > 0:
        flops = 2.0 * load.prefill_pairs * share * (model.attention_width + model.attention_output_width) / ta
        attention += float(kernels.flash_attention_time_s(flops, device)[0])

    # Memory-bound ops of attention's side, per token of the rank.
    per_attention_token = 2 * 4.0 * h + 2 * 6.0 * h
    if model.position_embedding == "rope":
        rope = model.mla.qk_rope_head_dim if model.mla is not None else model.dim_per_head
        kv_rope = rope if model.mla is not None else max(model.kv_heads // ta, 1) * rope
        per_attention_token += 4.0 * (model.num_heads / ta * rope + kv_rope)
    if model.mla is not None:
        per_attention_token += 4.0 * (model.mla.q_lora_rank + model.mla.kv_lora_rank)
    if low_precision:
        per_attention_token += 3.0 * (h + model.attention_output_width / ta)
    attention_elementwise = float(kernels.memory_bound_time_s(a_tokens * per_attention_token, device))

    # Dense layers' MLP (split over tp, all M tokens).
    dense_mlp = dense_elementwise = 0.0
    if dense_layers and tokens > 0:
        f = model.ffn_hidden_size / tp
        dense_mlp = gemm(tokens, [(h, (m - 1) * f), (f, h)])
        per = (6.0 if model.gated_mlp else 4.0) * f + (3.0 * (h + f) if low_precision else 0.0)
        dense_elementwise = float(kernels.memory_bound_time_s(tokens * per, device))

    # MoE layers: router, shared experts, routed experts.
    moe_gemm = moe_elementwise = 0.0
    ep_comm = 0.0
    if moe_layers and tokens > 0:
        experts, k = model.moe.num_experts, model.moe.top_k
        router_tokens = tokens / tp  # each TP rank routes its share of the replica's tokens
        moe_elementwise = float(kernels.memory_bound_time_s(
            h * experts * moe.ROUTER_BYTES + router_tokens * (h * ACTIVATION_BYTES + 4.0 * experts), device))
        fs = model.moe.shared_ffn_hidden_size / tp
        if fs:
            moe_gemm += gemm(tokens, [(h, (m - 1) * fs), (fs, h)])
            moe_elementwise += float(kernels.memory_bound_time_s(tokens * (6.0 if model.gated_mlp else 4.0) * fs,
                                                                 device))
        if ep == 1:
            pairs, touched, etp = tokens * k, moe.expected_distinct_experts(experts, k, tokens), tp
        else:
            group_tokens = tokens * ep / tp
            pairs = tokens * k / tp
            touched = moe.expected_distinct_experts(experts, k, group_tokens) / ep
            etp = 1
        moe_gemm += _expert_gemm_s(problem, pairs, touched, etp, precision, input_bytes)
        fe = model.moe.ffn_hidden_size / etp
        per_pair = (6.0 if model.gated_mlp else 4.0) * fe + (3.0 * (h + fe) if low_precision else 0.0)
        moe_elementwise += float(kernels.memory_bound_time_s(pairs * per_pair, device))
        if ep > tp:  # the group spans replicas: tokens travel by all-to-all
            members = ep_members(problem, tp, pp, ep)
            sent = tokens / tp * k * h
            dispatch = all_to_all_time_by_tier(sent * moe.DISPATCH_BYTES[model.moe.dispatch_dtype], members, cluster)
            combine = all_to_all_time_by_tier(sent * moe.COMBINE_BYTES, members, cluster)
            ep_comm = float(max(dispatch)) + float(max(combine))

    # TP collectives per layer.
    tp_group = tp_members(problem, tp)
    size = tokens * h * ACTIVATION_BYTES
    if dp_attention:
        gather = collective_time_by_tier("all_gather", size, tp_group, cluster)
        scatter = collective_time_by_tier("reduce_scatter", size, tp_group, cluster)
        tp_by_tier = [float(a + b) * layers for a, b in zip(gather, scatter, strict=True)]
    else:
        reduce = collective_time_by_tier("all_reduce", size, tp_group, cluster)
        tp_by_tier = [2.0 * float(x) * layers for x in reduce]

    cost = PassCost(
        gemm=layers * attention_gemm + dense_layers * dense_mlp + moe_layers * moe_gemm,
        attention=layers * attention,
        elementwise=layers * attention_elementwise + dense_layers * dense_elementwise + moe_layers * moe_elementwise,
        ep_comm=moe_layers * ep_comm, tp_by_tier=tp_by_tier,
    )
    if first:
        cost.elementwise += float(kernels.memory_bound_time_s(tokens * h * ACTIVATION_BYTES * 2, device))
    if last:
        cost.elementwise += float(kernels.memory_bound_time_s(tokens * 4.0 * h, device))  # final norm
        if load.logit_seqs > 0:
            vocab_tp = math.ceil(model.vocab_size / tp)
            cost.lm_head = _gemm_s(problem, load.logit_seqs, h, vocab_tp, "bf16", ACTIVATION_BYTES, ACTIVATION_BYTES)
            gather = collective_time_by_tier("all_gather", load.logit_seqs * model.vocab_size * ACTIVATION_BYTES,
                                             tp_group, cluster)
            cost.tp_by_tier = [a + float(b) for a, b in zip(cost.tp_by_tier, gather, strict=True)]
    cost.tp_comm = sum(cost.tp_by_tier)
    return cost
