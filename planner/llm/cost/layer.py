"""Time and activation memory of one transformer block for one micro-batch on one GPU.

Per GPU a micro-batch holds T = b * s / cp tokens. With tensor parallelism t, the weight
GEMMs, attention heads and MLP width divide by t; elementwise ops on the hidden state divide
by t only with sequence parallelism (Korthikanti et al. 2022, sec. 4.2.2).

Activation bytes stored for backward (Korthikanti et al., eq. 1-2 generalised to GQA, gated
MLPs, flash attention and CP), per block:
    replicated part (LN inputs, QKV/MLP inputs, dropout masks): (8 + 2*dropout) * T*h [/t with SP]
    TP part: 2T(aw + 2kvw) [Q,K,V] + 2T*aw [proj input] + (6 if gated else 4) T*f, all /t
    scores (unfused attention only): (2 + 3*dropout) * T*s*a / t [softmax, dropout mask+out]
With GPT dims (aw=kvw=h, f=4h, dropout) this is s*b*h*(10 + 24/t + 5as/(ht)): eq. 1.
Selective recompute drops the score part; full recompute keeps only the block input 2*T*h.
In fp8 the four weight-GEMM inputs are kept in fp8 (1 B): QKV and fc1 inputs, projection
input, fc2 input.

Communication per block: TP all-reduce (or SP all-gather + reduce-scatter) of T*h*2 bytes
twice forward and twice backward (Narayanan et al. 2021, fig. 5), exposed unless overlapped
with the GEMMs (then one chunk of t is exposed); CP ring exchange of K and
V, which moves what an all-gather of the sequence's K,V would move (forward), plus the
gradient reduce-scatter (backward); both hidden under attention when shorter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.llm.cost import kernels
from planner.core.collectives import collective_time_by_tier
from planner.llm.cost.flops import layer_matmul_flops_per_token
from planner.llm.cost.layout import PlanVars, group_members
from planner.llm.problem import Problem

BF16_BYTES = 2


@dataclass(frozen=True)
class LayerCost:
    """One block, one micro-batch, one GPU. Times in seconds, memory in bytes."""

    gemm_fwd_s: object
    attention_fwd_s: object
    attention_bwd_s: object
    memory_bound_fwd_s: object
    tp_fwd_by_tier: list
    tp_bwd_by_tier: list
    tp_exposed_fwd_s: object
    tp_exposed_bwd_s: object
    cp_fwd_by_tier: list
    cp_bwd_by_tier: list
    cp_exposed_fwd_s: object
    cp_exposed_bwd_s: object
    selective_recompute_s: object
    activation_none_bytes: object
    activation_selective_bytes: object
    activation_full_bytes: object
    tokens: object

    @property
    def compute_fwd_s(self):
        return self.gemm_fwd_s + self.attention_fwd_s + self.memory_bound_fwd_s

    @property
    def compute_bwd_s(self):
        return 2 * self.gemm_fwd_s + self.attention_bwd_s + 2 * self.memory_bound_fwd_s

    @property
    def fwd_s(self):
        return self.compute_fwd_s + self.tp_exposed_fwd_s + self.cp_exposed_fwd_s

    @property
    def bwd_s(self):
        return self.compute_bwd_s + self.tp_exposed_bwd_s + self.cp_exposed_bwd_s

    @property
    def full_recompute_s(self):
        """Extra backward time when the block's forward is re-run (full recompute)."""
        return self.fwd_s


def layer_cost(problem: Problem, v: PlanVars) -> LayerCost:
    model, task, cluster = problem.model, problem.task, problem.cluster
    device = cluster.device
    h, aw, kvw, f = model.hidden_size, model.attention_width, model.kv_width, model.ffn_hidden_size
    s = task.seq_len
    t = np.asarray(v.tp, dtype=float)
    c = np.asarray(v.cp, dtype=float)
    sp = np.asarray(v.sp, dtype=bool)
    tokens = np.asarray(v.micro_batch_size, dtype=float) * s / c
    hidden_div = np.where(sp, t, 1.0)
    flash = task.framework.attention == "flash"
    dropout = 1.0 if model.dropout else 0.0

    # Weight GEMMs: QKV, output projection, up(+gate, fused), down.
    gemm_flops = tokens * layer_matmul_flops_per_token(model) / t
    gemm_fwd = kernels.gemm_time_s(gemm_flops, 4, device, task.precision)

    # Attention core.
    if flash:
        attn_flops = 4.0 * tokens * (s / 2.0) * aw / t  # causal half skipped
        attn_fwd, attn_bwd = kernels.flash_attention_time_s(attn_flops, device)
        score_bytes = 0.0
    else:
        attn_flops = 4.0 * tokens * s * aw / t  # full s x s scores, masked after the GEMM
        attn_fwd = kernels.gemm_time_s(attn_flops, 2, device, "bf16")
        attn_bwd = kernels.gemm_time_s(2 * attn_flops, 4, device, "bf16")
        score_elements = tokens * s * model.num_heads / t
        score_bytes = score_elements * (4.0 + 5.0 * dropout)  # fused scale-mask-softmax; dropout
        attn_score_time = kernels.memory_bound_time_s(score_bytes, device)
        attn_fwd = attn_fwd + attn_score_time
        attn_bwd = attn_bwd + 2 * attn_score_time

    # Memory-bound ops outside attention (forward bytes; backward moves twice as much).
    hidden_elements = tokens * h / hidden_div
    gated = model.gated_mlp
    mem_bytes = hidden_elements * (8.0 + 12.0 + 10.0 * dropout)  # 2 norms, 2 residual adds, dropouts
    mem_bytes = mem_bytes + tokens * f / t * (6.0 if gated else 4.0)  # activation function
    if model.position_embedding == "rope":
        mem_bytes = mem_bytes + 4.0 * tokens * (aw + kvw) / t
    if task.precision == "fp8":
        mem_bytes = mem_bytes + 3.0 * tokens * (2 * h + aw / t + f / t)  # casts of GEMM inputs
    memory_fwd = kernels.memory_bound_time_s(mem_bytes, device)

    # Tensor-parallel collectives.
    tp_members = group_members(cluster, v, ("tp",))
    act_bytes = tokens * h * BF16_BYTES
    ar = collective_time_by_tier("all_reduce", act_bytes, tp_members, cluster)
    ag = collective_time_by_tier("all_gather", act_bytes, tp_members, cluster)
    rs = collective_time_by_tier("reduce_scatter", act_bytes, tp_members, cluster)
    tp_pair = [np.where(sp, g + r, a) for a, g, r in zip(ar, ag, rs, strict=True)]
    tp_fwd = [2 * x for x in tp_pair]
    tp_bwd = [2 * x for x in tp_pair]
    overlap = np.asarray(v.tp_comm_overlap, dtype=bool)
    tp_fwd_total, tp_bwd_total = sum(tp_fwd), sum(tp_bwd)
    # Overlap splits each GEMM and its collective into t chunks (Transformer Engine userbuffers
    # ring exchange): one chunk of communication cannot hide, the rest hides under the GEMM,
    # and each of the 4 GEMMs (8 backward) becomes t smaller calls.
    chunk_calls = (t - 1.0) * device.efficiency.gemm_overhead_s
    tp_exp_fwd = np.where(
        overlap,
        tp_fwd_total / t + np.maximum(tp_fwd_total * (t - 1) / t - gemm_fwd, 0.0) + 4 * chunk_calls,
        tp_fwd_total,
    )
    tp_exp_bwd = np.where(
        overlap,
        tp_bwd_total / t + np.maximum(tp_bwd_total * (t - 1) / t - 2 * gemm_fwd, 0.0) + 8 * chunk_calls,
        tp_bwd_total,
    )

    # Context-parallel ring exchange of K and V.
    cp_members = group_members(cluster, v, ("cp",))
    kv_bytes = c * 2.0 * tokens * kvw / t * BF16_BYTES  # the whole sequence's K and V
    cp_fwd = collective_time_by_tier("all_gather", kv_bytes, cp_members, cluster)
    cp_rs = collective_time_by_tier("reduce_scatter", kv_bytes, cp_members, cluster)
    cp_bwd = [a + r for a, r in zip(cp_fwd, cp_rs, strict=True)]
    cp_exp_fwd = np.maximum(sum(cp_fwd) - attn_fwd, 0.0)
    cp_exp_bwd = np.maximum(sum(cp_bwd) - attn_bwd, 0.0)

    # Selective recompute re-runs the attention core forward (a no-op for flash attention,
    # which already recomputes its scores inside the backward kernel).
    selective = 0.0 if flash else attn_fwd

    # Activation memory.
    # With fp8, Transformer Engine saves the inputs of the weight GEMMs (QKV, projection, fc1,
    # fc2) for the weight gradient in fp8: 1 B instead of 2.
    gemm_input = 1.0 if task.precision == "fp8" else 2.0
    replicated = (4.0 + 2.0 * gemm_input + 2.0 * dropout) * tokens * h / hidden_div
    mlp_bytes = (4.0 if gated else 2.0) + gemm_input
    tp_part = (2.0 * tokens * (aw + 2 * kvw) + gemm_input * tokens * aw + mlp_bytes * tokens * f) / t
    if flash:
        scores = 4.0 * tokens * model.num_heads / t  # fp32 log-sum-exp per row
        kept_scores = scores
    else:
        scores = (2.0 + 3.0 * dropout) * tokens * s * model.num_heads / t
        kept_scores = 0.0
    act_none = replicated + tp_part + scores
    act_selective = replicated + tp_part + kept_scores
    act_full = BF16_BYTES * tokens * h / hidden_div

    return LayerCost(
        gemm_fwd_s=gemm_fwd,
        attention_fwd_s=attn_fwd,
        attention_bwd_s=attn_bwd,
        memory_bound_fwd_s=memory_fwd,
        tp_fwd_by_tier=tp_fwd,
        tp_bwd_by_tier=tp_bwd,
        tp_exposed_fwd_s=tp_exp_fwd,
        tp_exposed_bwd_s=tp_exp_bwd,
        cp_fwd_by_tier=cp_fwd,
        cp_bwd_by_tier=cp_bwd,
        cp_exposed_fwd_s=cp_exp_fwd,
        cp_exposed_bwd_s=cp_exp_bwd,
        selective_recompute_s=selective,
        activation_none_bytes=act_none,
        activation_selective_bytes=act_selective,
        activation_full_bytes=act_full,
        tokens=tokens,
    )
