"""Time and activation memory of one transformer block for one micro-batch on one GPU.

A block is an attention half (norm, projections, attention core, residual) and an FFN half
(norm, dense MLP or MoE, residual); `layer_cost` prices the dense block and
planner.llm.cost.moe the MoE block from the same attention half.

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
with the GEMMs (then one chunk of t is exposed, and the hidden reduce-scatter side holds
Transformer Engine's SM-driven kernels' SMs, planner.core.kernels.UB_COMM_SM_FRACTION; under the
profile fact `tp_overlap:
micro-pipeline`, torch's async TP, only the collectives its pass fuses, see
`_micro_pipeline_exposed`). Attention kernel time and CP communication:
planner.llm.cost.attention (measured rate by key length and head dim; Transformer Engine's ring
of K,V sends, each hidden under one attention step when shorter, or an all-gather of K,V).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from planner.core import kernels
from planner.core.collectives import all_to_all_time_by_tier, collective_time_by_tier
from planner.llm import frameworks
from planner.llm.cost import attention
from planner.llm.cost.flops import attention_matmul_flops_per_token, dense_ffn_matmul_flops_per_token
from planner.llm.cost.moe_params import latent_width
from planner.llm.cost.recompute import BF16_BYTES, module_recompute
from planner.llm.cost.layout import PlanVars, group_members
from planner.llm.problem import Problem


@dataclass(frozen=True)
class LayerCost:
    """One block, one micro-batch, one GPU. Times in seconds, memory in bytes.

    The ep_* fields are the MoE token dispatcher's communication (zero for dense blocks).
    """

    gemm_fwd_s: object
    attention_fwd_s: object
    attention_bwd_s: object
    memory_bound_fwd_s: object
    memory_bound_bwd_s: object
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
    ep_fwd_by_tier: list = field(default_factory=list)
    ep_bwd_by_tier: list = field(default_factory=list)
    ep_exposed_fwd_s: object = 0.0
    ep_exposed_bwd_s: object = 0.0

    @property
    def compute_fwd_s(self):
        return self.gemm_fwd_s + self.attention_fwd_s + self.memory_bound_fwd_s

    @property
    def compute_bwd_s(self):
        return 2 * self.gemm_fwd_s + self.attention_bwd_s + self.memory_bound_bwd_s

    @property
    def fwd_s(self):
        return self.compute_fwd_s + self.tp_exposed_fwd_s + self.cp_exposed_fwd_s + self.ep_exposed_fwd_s

    @property
    def bwd_s(self):
        return self.compute_bwd_s + self.tp_exposed_bwd_s + self.cp_exposed_bwd_s + self.ep_exposed_bwd_s

    @property
    def full_recompute_s(self):
        """Extra backward time when the block's forward is re-run (full recompute)."""
        return self.fwd_s


@dataclass(frozen=True)
class Half:
    """What one half of a block (attention or FFN) adds, before TP exposure is worked out."""

    gemm_fwd_s: object
    memory_bound_fwd_s: object
    tp_pairs: object  # TP collective pairs per direction (AG+RS with SP, else an all-reduce)
    gemm_calls: object  # weight GEMMs whose collectives can be chunked for TP overlap
    activation_bytes: object  # stored for backward (no recompute)
    # Backward memory-bound seconds where they are not twice the forward's (None: twice).
    memory_bound_bwd_s: object = None
    # What module-level selective recompute (Plan.recompute_modules) re-runs and frees in this half:
    act_recompute_s: object = 0.0  # moe_act: the experts' activation forward again
    act_out_bytes: object = 0.0  # moe_act: its output (the second expert GEMM's input), not kept
    mlp_recompute_s: object = 0.0  # mlp: the dense MLP's forward again (norm, GEMMs, activation)
    mlp_inner_bytes: object = 0.0  # mlp: what the MLP keeps inside (norm output, fc1 and act outputs)
    is_moe: bool = False  # the MoE FFN half (moe_act applies; mlp does not)


@dataclass(frozen=True)
class Context:
    """Per-plan quantities both halves use."""

    tokens: object  # b * s / cp on this GPU
    t: object
    sp: object
    hidden_div: object  # t with sequence parallelism, else 1
    gemm_input_bytes: float  # 1 in fp8 (Transformer Engine keeps fp8 GEMM inputs), else 2
    dropout: float


def context(problem: Problem, v: PlanVars) -> Context:
    t = np.asarray(v.tp, dtype=float)
    sp = np.asarray(v.sp, dtype=bool)
    tokens = np.asarray(v.micro_batch_size, dtype=float) * problem.task.seq_len / np.asarray(v.cp, dtype=float)
    return Context(
        tokens=tokens, t=t, sp=sp, hidden_div=np.where(sp, t, 1.0),
        gemm_input_bytes=1.0 if problem.task.precision == "fp8" else 2.0,
        dropout=1.0 if problem.model.dropout else 0.0,
    )


def residual_half(problem: Problem, x: Context):
    """(memory-bound bytes, stored bytes) of a half's norm, residual add and dropout on the
    hidden state: the framework profile's bytes per element forward (Megatron-Core: norm 4 B,
    add 6 B, dropout 5 B); the norm input, the GEMM input after it and the dropout mask are
    kept."""
    facts = problem.task.framework.facts
    hidden = x.tokens * problem.model.hidden_size / x.hidden_div
    traffic = hidden * (facts.norm_bytes + facts.residual_add_bytes + facts.dropout_bytes * x.dropout)
    stored = (2.0 + x.gemm_input_bytes + x.dropout) * hidden
    return traffic, stored


def dense_ffn_half(problem: Problem, v: PlanVars, x: Context) -> Half:
    """The dense MLP: up (and gate, fused) and down GEMMs, TP-sharded."""
    model, task, device = problem.model, problem.task, problem.cluster.device
    h, f = model.hidden_size, model.ffn_hidden_size or 0
    gated = model.gated_mlp
    flops = x.tokens * dense_ffn_matmul_flops_per_token(model) / x.t
    traffic, stored = residual_half(problem, x)
    facts = task.framework.facts
    traffic = traffic + x.tokens * f / x.t * (facts.gated_act_bytes if gated else facts.act_bytes)  # activation
    if task.precision == "fp8":
        traffic = traffic + facts.fp8_cast_bytes * x.tokens * (h + f / x.t)  # casts of fc1 and fc2 inputs
    mlp_bytes = (4.0 if gated else 2.0) + x.gemm_input_bytes
    calls = 2 if facts.fused_gate_up or not gated else 3  # torchtitan: w1 and w3 apart
    gemm_s = kernels.gemm_time_s(flops, calls, device, task.precision)
    hidden = x.tokens * h / x.hidden_div
    # The MLP submodule (Megatron: fc1 with the pre-MLP norm fused, activation, fc2) re-run from
    # its input: the norm, the GEMMs, the activation and the fp8 casts; the residual add is outside.
    inner_traffic = facts.norm_bytes * hidden + x.tokens * f / x.t * (facts.gated_act_bytes if gated else facts.act_bytes)
    if task.precision == "fp8":
        inner_traffic = inner_traffic + facts.fp8_cast_bytes * x.tokens * (h + f / x.t)
    return Half(
        gemm_fwd_s=gemm_s,
        memory_bound_fwd_s=kernels.memory_bound_time_s(traffic, device),
        tp_pairs=1.0,
        gemm_calls=2.0,
        activation_bytes=stored + mlp_bytes * x.tokens * f / x.t,
        mlp_recompute_s=gemm_s + kernels.memory_bound_time_s(inner_traffic, device),
        mlp_inner_bytes=x.gemm_input_bytes * hidden + mlp_bytes * x.tokens * f / x.t,
    )


def layer_cost(problem: Problem, v: PlanVars) -> LayerCost:
    """The dense block (attention + dense MLP); see the module doc."""
    x = context(problem, v)
    return block_cost(problem, v, x, dense_ffn_half(problem, v, x))


def _decomposed_exposed_s(comm, gemm, t, overhead_s):
    """A collective decomposed into t chunks under the GEMM that consumes or produces it: one
    chunk of the communication stays exposed, the rest hides under the GEMM where shorter, and
    the GEMM becomes t calls (the Transformer Engine formula above, per collective)."""
    return comm / t + np.maximum(comm * (t - 1.0) / t - gemm, 0.0) + (t - 1.0) * overhead_s


def _micro_pipeline_exposed(problem, sp, t, act_bytes, ag, rs, fwd_total, bwd_total, attn_gemm_s,
                            ffn_gemm_s, overlap, overhead_s):
    """(forward, backward) exposed TP time of a dense block under torch inductor's async TP
    (`tp_overlap: micro-pipeline`; torch/_inductor/fx_passes/micro_pipeline_tp.py, read at a
    late-2024 version, the pass torchtitan@9dec370 turns on with `_micro_pipeline_tp`).

    The pass fuses an all-gather with the matmuls that take its output as their left operand
    (fuse_all_gather_matmul -> symm_mem.fused_all_gather_matmul / _scaled_matmul) and a
    reduce-scatter whose input is one matmul's output (fuse_matmul_reduce_scatter,
    `_find_producer_matmul`). Forward (and the full-recompute forward): the all-gather before
    wq, wk, wv (before w1, w3) hides under those GEMMs; the reduce-scatter after wo (after w2)
    under that GEMM. Backward: the all-gather of wo's (w2's) output gradient hides under the
    input-gradient GEMM only (the weight-gradient GEMM reads it transposed); the reduce-scatter
    of the block input's gradient is not fused (its input is the sum of the wq, wk, wv (w1, w3)
    input gradients, not one matmul's output) and stays exposed. Without sequence parallelism
    the TP all-reduces are not decomposed: exposed.

    A fused reduce-scatter (symm_mem.fused_matmul_reduce_scatter) gathers every rank's partial
    product of its rows into a stacked buffer, then sums them on the compute stream
    (`reduce_fn(stacked_partials...)`, torch.sum over the group dimension): a memory-bound pass
    after the pipeline that reads the t partials (the unsharded T x h output, bf16) and writes
    the 1/t shard, which NCCL's reduce-scatter does inside the collective."""
    qkv_share, up_share = frameworks.tp_input_gemm_shares(problem.model)
    g_in = [qkv_share * attn_gemm_s, up_share * ffn_gemm_s]  # consume the all-gathers
    g_out = [(1.0 - qkv_share) * attn_gemm_s, (1.0 - up_share) * ffn_gemm_s]  # feed the reduce-scatters
    reduce_pass = kernels.memory_bound_time_s(act_bytes * (1.0 + 1.0 / t), problem.cluster.device)
    fwd = sum(_decomposed_exposed_s(ag, g, t, overhead_s) for g in g_in) + \
        sum(_decomposed_exposed_s(rs, g, t, overhead_s) + reduce_pass for g in g_out)
    bwd = sum(_decomposed_exposed_s(ag, g, t, overhead_s) for g in g_out) + 2.0 * rs
    on = np.asarray(overlap, dtype=bool) & np.asarray(sp, dtype=bool)
    return np.where(on, fwd, fwd_total), np.where(on, bwd, bwd_total)


def block_cost(problem: Problem, v: PlanVars, x: Context, ffn: Half, ep: tuple | None = None) -> LayerCost:
    """A block from the attention half and the given FFN half; `ep` = (forward by tier,
    backward by tier, exposed forward, exposed backward) of the MoE dispatcher."""
    model, task, cluster = problem.model, problem.task, problem.cluster
    device = cluster.device
    h, kvw = model.hidden_size, model.kv_width
    qw, vw, ow = model.attention_width, model.value_width, model.attention_output_width
    s = task.seq_len
    tokens, t, sp = x.tokens, x.t, x.sp
    flash = task.framework.attention == "flash"
    facts = task.framework.facts
    dropout = x.dropout
    latent = latent_width(model) if model.family == "moe" else 0

    # Attention projections (QKV and output; MLA: query and key/value latents, up-projections).
    attn_gemm_flops = tokens * attention_matmul_flops_per_token(model) / t
    attn_calls = 2 if not latent else (5 if model.mla.q_lora_rank else 4)
    if not latent and not facts.fused_qkv:
        attn_calls = 4  # wq, wk, wv apart, and the output projection
    gemm_fwd = kernels.gemm_time_s(attn_gemm_flops, attn_calls, device, task.precision) + ffn.gemm_fwd_s

    # Attention core.
    core_width = qw + ow  # QK^T over the query/key head dim, AV over the value head dim
    c = np.asarray(v.cp, dtype=float)
    if flash:
        # The causal half on the profile's kernel at its measured rate by key length and head dim;
        # with CP, Transformer Engine's ring runs cp calls (planner.llm.cost.attention).
        attn_fwd, attn_bwd, step_fwd, step_bwd = attention.flash_time_s(
            facts.attention_kernel, device, s, c, tokens, core_width / t, qw / model.num_heads,
            facts.cp_comm_type)
        windowed = model.windowed_layer_share
        if windowed:
            # Sliding-window layers (without CP) over their band; the average layer of the pattern.
            win_fwd, win_bwd = attention.windowed_time_s(
                facts.attention_kernel, device, s, model.sliding_window, tokens, core_width / t,
                qw / model.num_heads)
            # Transformer Engine takes a window under CP with its a2a and all-gather attention
            # (one call per GPU, the same FLOPs), not with the p2p ring (refused by the plan check).
            alone = (c == 1) | (facts.cp_comm_type != "p2p")
            attn_fwd = np.where(alone, (1.0 - windowed) * attn_fwd + windowed * win_fwd, attn_fwd)
            attn_bwd = np.where(alone, (1.0 - windowed) * attn_bwd + windowed * win_bwd, attn_bwd)
        score_bytes = 0.0
    else:
        attn_flops = 2.0 * tokens * s * core_width / t  # full s x s scores, masked after the GEMM
        attn_fwd = kernels.gemm_time_s(attn_flops, 2, device, "bf16")
        attn_bwd = kernels.gemm_time_s(2 * attn_flops, 4, device, "bf16")
        score_elements = tokens * s * model.num_heads / t
        score_bytes = score_elements * (4.0 + 5.0 * dropout)  # fused scale-mask-softmax; dropout
        attn_score_time = kernels.memory_bound_time_s(score_bytes, device)
        attn_fwd = attn_fwd + attn_score_time
        attn_bwd = attn_bwd + 2 * attn_score_time
        step_fwd, step_bwd = attn_fwd / c, attn_bwd / c

    # Memory-bound ops of the attention half (forward bytes; backward moves twice as much, but
    # for a rotary embedding the profile counts apart: YaRN's, which Megatron-Core runs unfused).
    traffic, attn_stored = residual_half(problem, x)
    rope_fwd_bytes, rope_bwd_bytes = 0.0, 0.0
    if model.position_embedding == "rope":
        rope_elements = tokens * (qw + kvw) / t
        if model.rope_yarn_factor is not None and facts.yarn_rope_bytes is not None:
            # The query's and the key's call each also make their cos and sin tables per position.
            tables = 2.0 * facts.yarn_rope_table_bytes * (s / c) * (qw / model.num_heads)
            rope_fwd_bytes = facts.yarn_rope_bytes * rope_elements + tables
            rope_bwd_bytes = facts.yarn_rope_bwd_bytes * rope_elements
        else:
            rope_fwd_bytes = facts.rope_bytes * rope_elements
            rope_bwd_bytes = 2.0 * rope_fwd_bytes
    traffic = traffic + 4.0 * tokens * latent  # MLA's latent norms
    if task.precision == "fp8":
        traffic = traffic + facts.fp8_cast_bytes * tokens * (h + ow / t)  # casts of the QKV and projection inputs
    if facts.repeat_kv and not latent and kvw < qw:
        # K and V copied to every query head: read 2 B per K/V element, write 2 B per query one.
        traffic = traffic + 2.0 * 2.0 * tokens * (kvw + qw) / t
    attn_memory_fwd = kernels.memory_bound_time_s(traffic + rope_fwd_bytes, device)
    attn_memory_bwd = kernels.memory_bound_time_s(2.0 * traffic + rope_bwd_bytes, device)
    memory_fwd = attn_memory_fwd + ffn.memory_bound_fwd_s
    ffn_memory_bwd = 2.0 * ffn.memory_bound_fwd_s if ffn.memory_bound_bwd_s is None else ffn.memory_bound_bwd_s
    memory_bwd = attn_memory_bwd + ffn_memory_bwd

    # Tensor-parallel collectives: one pair per direction for attention, the FFN's own.
    tp_members = group_members(cluster, v, ("tp",))
    act_bytes = tokens * h * BF16_BYTES
    ar = collective_time_by_tier("all_reduce", act_bytes, tp_members, cluster)
    # torchao's float8 TP casts before the all-gather: fp8 (1 B per element) on the wire.
    ag_bytes = act_bytes / 2.0 if facts.tp_fp8_all_gather and task.precision == "fp8" else act_bytes
    ag = collective_time_by_tier("all_gather", ag_bytes, tp_members, cluster)
    rs = collective_time_by_tier("reduce_scatter", act_bytes, tp_members, cluster)
    pairs = 1.0 + np.asarray(ffn.tp_pairs, dtype=float)
    tp_pair = [np.where(sp, g + r, a) for a, g, r in zip(ar, ag, rs, strict=True)]
    tp_fwd = [pairs * x_ for x_ in tp_pair]
    tp_bwd = [pairs * x_ for x_ in tp_pair]
    overlap = np.asarray(v.tp_comm_overlap, dtype=bool)
    tp_fwd_total, tp_bwd_total = sum(tp_fwd), sum(tp_bwd)
    calls = 2.0 + np.asarray(ffn.gemm_calls, dtype=float)
    chunk_calls = (t - 1.0) * device.efficiency.gemm_overhead_s
    # MoE blocks keep the chunked model: torchtitan's MoE TP is not modelled.
    if facts.tp_overlap == "micro-pipeline" and model.family != "moe":
        tp_exp_fwd, tp_exp_bwd = _micro_pipeline_exposed(
            problem, sp, t, act_bytes, sum(ag), sum(rs), tp_fwd_total, tp_bwd_total,
            kernels.gemm_time_s(attn_gemm_flops, attn_calls, device, task.precision), ffn.gemm_fwd_s,
            overlap, device.efficiency.gemm_overhead_s)
    else:
        # Overlap splits each GEMM and its collective into t chunks (Transformer Engine
        # userbuffers ring exchange): one chunk of communication cannot hide, the rest hides
        # under the GEMMs, and each TP-sharded GEMM (twice as many backward) becomes t calls.
        # The chunks hidden under the GEMMs still hold SMs while they run: Transformer Engine's
        # reduce-scatter side ('pipeline' forward, 'bulk' backward) runs on UB_COMM_SM_FRACTION of
        # them, its all-gathers ('ring_exchange') on copy engines (kernels.UB_COMM_SM_FRACTION),
        # so the SM share of the hidden part is that fraction times the reduce-scatters' share.
        rs_share = sum(rs) / np.maximum(sum(ag) + sum(rs), 1e-30)
        share = kernels.UB_COMM_SM_FRACTION * rs_share
        tp_exp_fwd = np.where(
            overlap,
            tp_fwd_total / t + kernels.contended_exposed_s(tp_fwd_total * (t - 1) / t, gemm_fwd, share)
            + calls * chunk_calls,
            tp_fwd_total,
        )
        tp_exp_bwd = np.where(
            overlap,
            tp_bwd_total / t + kernels.contended_exposed_s(tp_bwd_total * (t - 1) / t, 2 * gemm_fwd, share)
            + 2 * calls * chunk_calls,
            tp_bwd_total,
        )

    # Context parallelism: K and V around the ring (p2p), or gathered before attention.
    cp_members = group_members(cluster, v, ("cp",))
    chunk_bytes = tokens * (kvw + vw) / t * BF16_BYTES  # this GPU's K and V
    if facts.repeat_kv and not latent and kvw < qw:
        # K and V are repeated to every query head before the attention call that CP patches
        # (torchtitan@9dec370 models/llama/model.py: repeat_kv, then F.scaled_dot_product_attention):
        # what CP moves is the repeated K and V.
        chunk_bytes = chunk_bytes * qw / kvw
    if facts.cp_comm_type == "p2p":
        hop = attention.ring_hop_time_by_tier(chunk_bytes, cp_members, cluster)
        hop2 = attention.ring_hop_time_by_tier(2.0 * chunk_bytes, cp_members, cluster)
        ring = np.asarray(c > 1, dtype=float)
        cp_fwd = [ring * (c - 1.0) * x_ for x_ in hop]
        cp_bwd = [ring * (2.0 * x_ + np.maximum(c - 2.0, 0.0) * y_) for x_, y_ in zip(hop, hop2, strict=True)]
        cp_exp_fwd, cp_exp_bwd = attention.ring_exposed_s(c, sum(hop), sum(hop), sum(hop2), step_fwd, step_bwd)
    elif facts.cp_comm_type == "a2a":
        # Ulysses (TE AttnFuncWithCPAndQKVOA2A): Q, K, V all-to-all before attention (sequence
        # gathered, heads scattered) and the output after it; backward moves O and dO back, and
        # dQ, dK, dV. Not overlapped; the tiers of an all-to-all run at once.
        width = (qw + kvw + vw) / t * BF16_BYTES
        out = ow / t * BF16_BYTES
        cp_fwd = all_to_all_time_by_tier(tokens * (width + out), cp_members, cluster)
        cp_bwd = all_to_all_time_by_tier(tokens * (width + 2.0 * out), cp_members, cluster)
        cp_exp_fwd = np.maximum.reduce([np.asarray(x_, dtype=float) for x_ in cp_fwd])
        cp_exp_bwd = np.maximum.reduce([np.asarray(x_, dtype=float) for x_ in cp_bwd])
    else:
        kv_bytes = c * chunk_bytes  # the whole sequence's K and V
        cp_fwd = collective_time_by_tier("all_gather", kv_bytes, cp_members, cluster)
        cp_rs = collective_time_by_tier("reduce_scatter", kv_bytes, cp_members, cluster)
        cp_bwd = [a + r for a, r in zip(cp_fwd, cp_rs, strict=True)]
        cp_exp_fwd, cp_exp_bwd = sum(cp_fwd), sum(cp_bwd)  # before and after the attention call

    # Selective recompute re-runs the parts in the plan's recompute_modules (Megatron-Core's
    # default: the attention core forward, a no-op for flash attention, which already recomputes
    # its scores inside the backward kernel); the others are priced with the memory below.
    modules = v.recompute_modules
    selective = (0.0 if flash else attn_fwd) if "core_attn" in modules else 0.0
    if facts.selective_recompute == "op-every-second-mm":
        # torchtitan's op-level policy: the even-numbered GEMMs of the forward order and every
        # memory-bound op are re-run; attention outputs are saved.
        attn_share, mlp_share = frameworks.op_sac_recomputed_share(model) if not latent else (0.0, 0.0)
        if model.family == "moe":
            mlp_share = 0.0  # expert GEMMs: not counted (torchtitan's MoE policy is not modelled)
        attn_gemm = kernels.gemm_time_s(attn_gemm_flops, attn_calls, device, task.precision)
        selective = attn_share * attn_gemm + mlp_share * ffn.gemm_fwd_s + memory_fwd

    # Activation memory: Q, K, V (bf16), the projection input, MLA's latents, softmax state.
    attn_part = (2.0 * tokens * (qw + kvw + vw) + x.gemm_input_bytes * tokens * ow) / t
    attn_part = attn_part + 2.0 * tokens * latent
    if flash:
        scores = 4.0 * tokens * model.num_heads / t  # fp32 log-sum-exp per row
        kept_scores = scores
    else:
        scores = (2.0 + 3.0 * dropout) * tokens * s * model.num_heads / t
        kept_scores = 0.0
    kept = attn_stored + attn_part + ffn.activation_bytes
    act_none = kept + scores
    act_selective = kept + (kept_scores if "core_attn" in modules else scores)
    if facts.selective_recompute == "core-attention":
        extra_s, freed = module_recompute(problem, v, x, ffn, latent, tp_exp_fwd, pairs)
        selective = selective + extra_s
        act_selective = act_selective - freed
    if facts.selective_recompute == "op-every-second-mm" and not latent and model.family != "moe":
        # torchtitan's op policy keeps the block input, the outputs of the odd-numbered GEMMs
        # (wq, wv, w1, w2 when gated) and SDPA's output and log-sum-exp; the rest is recomputed.
        widths = {"wq": qw, "wk": kvw, "wv": vw, "wo": h, "w1": model.ffn_hidden_size or 0,
                  "w3": model.ffn_hidden_size or 0, "w2": h}
        kept_gemm = sum(widths[n] for i, (n, _) in enumerate(frameworks.block_gemms(model), start=1) if i % 2)
        act_selective = BF16_BYTES * tokens * (h / x.hidden_div + (kept_gemm + ow) / t) + kept_scores
    act_full = BF16_BYTES * tokens * h / x.hidden_div

    ep_parts: dict = {}
    if ep is not None:
        ep_parts = dict(ep_fwd_by_tier=ep[0], ep_bwd_by_tier=ep[1], ep_exposed_fwd_s=ep[2], ep_exposed_bwd_s=ep[3])
    return LayerCost(
        gemm_fwd_s=gemm_fwd,
        attention_fwd_s=attn_fwd,
        attention_bwd_s=attn_bwd,
        memory_bound_fwd_s=memory_fwd,
        memory_bound_bwd_s=memory_bwd,
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
        **ep_parts,
    )
