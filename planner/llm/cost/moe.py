"""The MoE block: the attention half of planner.llm.cost.layer and an MoE FFN half.

Experts fold onto the attention grid as in Megatron-Core (../shared/reference/moe.md sec. 2):
inside a pipeline stage the ranks form ETP x EP x EDP (ETP innermost, consecutive ranks), so
an EP group spans etp*ep consecutive ranks and sits in the NVLink domain when that fits.

Per GPU and micro-batch, with T = b*s/(cp*tp) tokens at the MoE input (sequence parallelism is
required with TP), k = top-k, E experts, f = expert width, imbalance u (busiest rank / mean):
    routed tokens   R = T * k * etp * u  (the EP all-to-all brings T*k*etp per rank on average;
                    ETP peers all-gather their tokens and each computes 1/etp of the width)
    router          GEMM T x h x E, scores and top-k (memory-bound, fp32 scores)
    experts         grouped GEMMs over E/ep local experts of R*ep/E tokens each: each expert's
                    rows pad to the kernel's 128-row tile, and a grouped GEMM runs at
                    GROUPED_GEMM_RELATIVE of a dense GEMM's plateau. Transformer Engine's grouped
                    linear issues one cuBLAS GEMM per expert (multi-stream; TransformerEngine
                    pytorch/csrc/extensions/gemm.cpp, "only multi-stream cublas backend"), so
                    each local expert pays the per-call cost: 2 calls forward (fc1, fc2)
    permutation     gathering tokens by expert (4 B per routed element) and the weighted
                    un-permute (6 B); the alltoall dispatcher with ep*etp > 1 also sorts the
                    received chunks by local expert and back (4 + 4 B; moe.md sec. 2.2)
    eager ops       what the framework profile says its implementation runs outside fused
                    kernels (planner.llm.frameworks): Megatron-Core adds the second expert GEMM's
                    bias per expert in eager PyTorch (28 B forward, 40 B backward per routed
                    element of width h; experts with `moe.bias`) and clamps a clamped gated
                    activation's input with torch ops (16 B forward, 30 B backward per routed
                    element of the expert width; `moe.activation_clamp`, re-run with moe_act)
    shared experts  a TP-sharded dense MLP of the shared width on the block's tokens (one TP
                    all-gather/reduce-scatter pair each way, as the dense MLP)
Dispatcher (`plan.dispatcher`):
    alltoall   forward: dispatch all-to-all over EP of T*k*h*beta_d bytes, combine of T*k*h*2;
               with ETP > 1 an all-gather of the R*h*beta_d received tokens over ETP and a
               reduce-scatter of R*h*2 on the way back; backward: the same four collectives
               on bf16 gradients (moe.md sec. 3). beta_d = 2 (bf16) or 1 + 4/128 (fp8 with one
               fp32 scale per 128 elements, DeepSeek-V3's 1x128 tiles).
    allgather  all-gather over ETP x EP of T*etp*ep*h*2 bytes and a reduce-scatter back, each
               way; the volume does not grow with k.
    flex       DeepEP/HybridEP (etp = 1): one fused dispatch (and combine) kernel over the EP
               group, no chunk sorting. Its traffic is priced as the alltoall's, every routed
               copy crossing its tier: DeepEP's measured logical bandwidths on H800 + CX7
               (EP 8x2: 90 GB/s dispatch, 81 combine; EP 8x4: 61 / 61; moe.md sec. 3) are
               what copies crossing a 50 GB/s NIC at 0.90 efficiency give (45 / (1/2) and
               45 / (3/4) GB/s), not what per-node de-duplication would give.
EP overlap (`plan.ep_comm_overlap`, Megatron-Core --overlap-moe-expert-parallel-comm): the
forward of one micro-batch runs beside the backward of another, so the forward collectives
hide under the block's backward compute and the backward collectives under its forward compute;
what does not fit stays exposed. The communication kernels occupy COMM_SM_FRACTION (planner.core.kernels) of the
GPU's SMs while they run, so compute overlapped with them slows down: with C seconds of compute
and M of communication the pair takes max(M, C + COMM_SM_FRACTION * M), i.e. at least
COMM_SM_FRACTION * M is exposed. Only micro-batches of the steady 1F1B phase have a partner:
the warm-up forwards and the cool-down backwards run alone (Megatron-Core core_r0.15
pipeline_parallel/schedules.py get_pp_rank_microbatches: (pp - rank - 1) * 2 + (vpp - 1) * pp
warm-up chunks under interleaving, plus one more with the overlap; combined_1f1b.py
combined_1f1b_schedule_for_no_pipelining: the first forward and the last backward alone). Over
the pipeline ranks that is pp * vpp of the m * vpp chunks (pp = 1: one of m), so a share
UNPAIRED = min(1, pp / m) of the collectives stays exposed. Without overlap every dispatcher
collective is exposed.
Activations kept per MoE block: the norm/router input, fp32 router scores (2 x T*E*4), the
routed tokens (fc1 input), the fc1 output and activation (as the dense MLP, on R tokens of
width f/etp), the expert outputs for the weighted combine (R*h*2), the shared MLP's.
"""

from __future__ import annotations

import numpy as np

from planner.core.collectives import all_to_all_time_by_tier, collective_time_by_tier, members_per_tier
from planner.core import kernels
from planner.llm.cost.layer import Context, Half, LayerCost, block_cost, context, residual_half
from planner.llm.cost.layout import DISPATCHER_CODES, PlanVars
from planner.llm.problem import Problem

GROUPED_GEMM_RELATIVE = 0.647 / 0.718
"""Grouped-GEMM (MoE) throughput relative to dense GEMMs: medians of the same per-shape
measurements on A100 (SimuMax a100_pcie.json: grouped GEMM 0.647 of peak over 12 shapes, dense
GEMMs of 100-1000 GFLOP 0.718 over 99 shapes; ../shared/data/efficiency.md sec. a2)."""

TILE_ROWS = 128
"""Rows of a grouped-GEMM tile (CUTLASS/cuBLAS Hopper and Ampere kernels use 128-row tiles;
Anthony et al. 2024 on tile quantization): each expert's token count pads up to it."""

FP8_DISPATCH_BYTES = 1.0 + 4.0 / 128
"""Bytes per element of an fp8 token dispatch: 1 B plus an fp32 scale per 128 elements."""


def dispatch_bytes_per_token(model) -> tuple[float, float]:
    """(forward, backward) bytes one token sends through the alltoall dispatcher of one MoE
    layer: k copies dispatched (beta_d) and combined (bf16) forward, both in bf16 backward."""
    moe, h = model.moe, model.hidden_size
    beta_d = FP8_DISPATCH_BYTES if moe.dispatch_dtype == "fp8" else 2.0
    return moe.top_k * h * (beta_d + 2.0), moe.top_k * h * 4.0


def routed_tokens(problem: Problem, v: PlanVars, x: Context):
    """R: tokens the busiest GPU's experts process per micro-batch (see the module doc)."""
    moe = problem.model.moe
    etp = np.asarray(v.etp, dtype=float)
    return x.tokens / x.t * moe.top_k * etp * problem.task.moe_load_imbalance


def moe_ffn_half(problem: Problem, v: PlanVars, x: Context) -> Half:
    model, task, device = problem.model, problem.task, problem.cluster.device
    moe, h = model.moe, model.hidden_size
    ep = np.asarray(v.ep, dtype=float)
    etp = np.asarray(v.etp, dtype=float)
    gated = model.gated_mlp
    matrices = 3.0 if gated else 2.0
    moe_tokens = x.tokens / x.t  # sequence-parallel shard (tp = 1: the whole micro-batch)
    routed = routed_tokens(problem, v, x)
    width = moe.ffn_hidden_size / etp

    # Router GEMM (bf16) and the grouped expert GEMMs with per-expert tile padding.
    router = kernels.gemm_time_s(2.0 * moe_tokens * h * moe.num_experts, 1, device, "bf16")
    local_experts = moe.num_experts / ep
    per_expert = routed / local_experts
    padded = np.ceil(per_expert / TILE_ROWS) * TILE_ROWS
    expert_flops = 2.0 * matrices * local_experts * padded * h * width / GROUPED_GEMM_RELATIVE
    experts = kernels.gemm_time_s(expert_flops, 2 * local_experts, device, task.precision)
    shared_width = moe.shared_ffn_hidden_size
    shared = 0.0
    if shared_width:
        shared = kernels.gemm_time_s(2.0 * matrices * x.tokens * h * shared_width / x.t, 2, device, task.precision)

    traffic, stored = residual_half(problem, x)
    traffic = traffic + moe_tokens * moe.num_experts * 12.0  # fp32 scores: activation, top-k
    sorted_chunks = (np.asarray(v.dispatcher) == DISPATCHER_CODES["alltoall"]) & (ep * etp > 1)
    traffic = traffic + np.where(sorted_chunks, 18.0, 10.0) * routed * h  # (un)permute, chunk sorts
    traffic = traffic + routed * width * (6.0 if gated else 4.0)
    traffic = traffic + x.tokens * shared_width / x.t * (6.0 if gated else 4.0)
    if task.precision == "fp8":
        traffic = traffic + 3.0 * (routed * (h + width) + x.tokens * shared_width / x.t)
    mlp_bytes = (4.0 if gated else 2.0) + x.gemm_input_bytes
    stored = stored + 8.0 * moe_tokens * moe.num_experts
    stored = stored + routed * (x.gemm_input_bytes * h + mlp_bytes * width + 2.0 * h)
    # A clamped activation's fused kernel keeps the clamped copy of fc1's output (2 x width bf16
    # per routed token) beside fc1's own output; moe_act drops it with the activation's output.
    clamp_copy = 4.0 * routed * width if moe.activation_clamp is not None and gated else 0.0
    stored = stored + clamp_copy
    stored = stored + mlp_bytes * x.tokens * shared_width / x.t
    # moe_act (Megatron-Core's output-discarding checkpoint of the grouped experts' activation):
    # the activation output, the second expert GEMM's input, is freed after that GEMM and the
    # activation re-runs in the backward from the kept first-GEMM output (with its fp8 cast).
    act_traffic = routed * width * ((6.0 if gated else 4.0) + (3.0 if task.precision == "fp8" else 0.0))
    # Eager ops the framework runs beside its fused kernels (profile facts): the second expert
    # GEMM's bias added per expert (experts with biases) and the clamp before a clamped gated
    # activation, which every re-run of the activation pays again. Their backward is priced
    # from the profile's own count, not as twice the forward.
    facts = task.framework.facts
    bias_elements = routed * h if moe.bias else 0.0
    clamp_elements = routed * width if moe.activation_clamp is not None and gated else 0.0
    eager_fwd = facts.expert_bias_bytes * bias_elements + facts.act_clamp_bytes * clamp_elements
    eager_bwd = facts.expert_bias_bwd_bytes * bias_elements + facts.act_clamp_bwd_bytes * clamp_elements
    act_traffic = act_traffic + facts.act_clamp_bytes * clamp_elements
    return Half(
        gemm_fwd_s=router + experts + shared,
        memory_bound_fwd_s=kernels.memory_bound_time_s(traffic + eager_fwd, device),
        memory_bound_bwd_s=kernels.memory_bound_time_s(2.0 * traffic + eager_bwd, device),
        tp_pairs=1.0 if shared_width else 0.0,
        gemm_calls=2.0 if shared_width else 0.0,
        activation_bytes=stored,
        act_recompute_s=kernels.memory_bound_time_s(act_traffic, device),
        act_out_bytes=x.gemm_input_bytes * routed * width + clamp_copy,
        is_moe=True,
    )


def dispatcher_times(problem: Problem, v: PlanVars, x: Context) -> tuple[list, list]:
    """(forward, backward) dispatcher seconds per tier of one MoE block, before overlap.

    All-to-all tiers run at once (the block's time is the slowest tier); the ETP and all-gather
    collectives are hierarchical (tiers in sequence). Per-tier lists add the ETP collectives to
    the all-to-all's tiers.
    """
    model, cluster = problem.model, problem.cluster
    moe, h = model.moe, model.hidden_size
    ep = np.asarray(v.ep, dtype=float)
    etp = np.asarray(v.etp, dtype=float)
    moe_tokens = x.tokens / x.t
    beta_d = FP8_DISPATCH_BYTES if moe.dispatch_dtype == "fp8" else 2.0
    ep_members = members_per_tier(cluster, [ep], [etp])
    etp_members = members_per_tier(cluster, [etp], [1.0])
    group_members = members_per_tier(cluster, [etp * ep], [1.0])
    copies = moe_tokens * moe.top_k * h
    routed = moe_tokens * moe.top_k * etp * h  # average (the collectives carry every token)

    def a2a(num_bytes):
        tiers = np.broadcast_arrays(*[np.asarray(t, dtype=float)
                                      for t in all_to_all_time_by_tier(num_bytes, ep_members, cluster)])
        slowest = np.argmax(np.stack(tiers), axis=0)
        # The slowest tier's time, reported on that tier (the others run beside it).
        return [np.where(slowest == i, t, 0.0) for i, t in enumerate(tiers)]

    def gathered(num_bytes):
        ag = collective_time_by_tier("all_gather", num_bytes, etp_members, cluster)
        rs = collective_time_by_tier("reduce_scatter", num_bytes, etp_members, cluster)
        return ag, rs

    d_fwd, c_fwd, d_bwd = a2a(copies * beta_d), a2a(copies * 2.0), a2a(copies * 2.0)
    etp_ag_fwd, _ = gathered(routed * beta_d)
    etp_ag, etp_rs = gathered(routed * 2.0)
    alltoall_fwd = [a + b + g + r for a, b, g, r in zip(d_fwd, c_fwd, etp_ag_fwd, etp_rs, strict=True)]
    alltoall_bwd = [2 * a + g + r for a, g, r in zip(d_bwd, etp_ag, etp_rs, strict=True)]

    all_bytes = moe_tokens * etp * ep * h * 2.0
    ag = collective_time_by_tier("all_gather", all_bytes, group_members, cluster)
    rs = collective_time_by_tier("reduce_scatter", all_bytes, group_members, cluster)
    allgather = [g + r for g, r in zip(ag, rs, strict=True)]

    flex_fwd = [a + b for a, b in zip(d_fwd, c_fwd, strict=True)]
    flex_bwd = [2 * a for a in d_bwd]

    code = np.asarray(v.dispatcher)
    use_allgather = code == DISPATCHER_CODES["allgather"]
    use_flex = code == DISPATCHER_CODES["flex"]
    fwd = [np.where(use_allgather, g, np.where(use_flex, f, a))
           for g, f, a in zip(allgather, flex_fwd, alltoall_fwd, strict=True)]
    bwd = [np.where(use_allgather, g, np.where(use_flex, f, a))
           for g, f, a in zip(allgather, flex_bwd, alltoall_bwd, strict=True)]
    return fwd, bwd


def unpaired_share(problem: Problem, v: PlanVars):
    """Share of micro-batch chunks whose forward (or backward) has no partner under the EP
    overlap: the warm-up forwards and cool-down backwards, pp * vpp of m * vpp chunks averaged
    over the pipeline ranks (one of m without a pipeline); see the module doc."""
    pp = np.asarray(v.pp, dtype=float)
    m = np.floor(v.sequences(problem.task) / (np.asarray(v.dp, dtype=float) * np.asarray(v.micro_batch_size, dtype=float)))
    return np.minimum(1.0, pp / np.maximum(m, 1.0))


def moe_layer_cost(problem: Problem, v: PlanVars) -> LayerCost:
    """The MoE block (see the module doc)."""
    x = context(problem, v)
    ffn = moe_ffn_half(problem, v, x)
    fwd, bwd = dispatcher_times(problem, v, x)
    fwd_total, bwd_total = sum(fwd), sum(bwd)
    plain = block_cost(problem, v, x, ffn)
    overlap = np.asarray(v.ep_comm_overlap, dtype=bool)
    unpaired = unpaired_share(problem, v)
    paired_fwd = kernels.contended_exposed_s(fwd_total, plain.compute_bwd_s)
    paired_bwd = kernels.contended_exposed_s(bwd_total, plain.compute_fwd_s)
    exposed_fwd = np.where(overlap, unpaired * fwd_total + (1.0 - unpaired) * paired_fwd, fwd_total)
    exposed_bwd = np.where(overlap, unpaired * bwd_total + (1.0 - unpaired) * paired_bwd, bwd_total)
    return block_cost(problem, v, x, ffn, (fwd, bwd, exposed_fwd, exposed_bwd))
