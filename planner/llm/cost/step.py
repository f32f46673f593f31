"""The assembled training step: stages, pipeline, data parallelism, optimizer, overlap.

Per stage i and micro-batch (seconds):
    F_i = L_i * block.fwd + [first] embedding + [last] head + pipeline sends
    B_i = L_i * block.bwd + R_i * block.fwd (full recompute) + L_i * selective part + edges
          + pipeline sends
    exposed ZeRO-3 gathers (and ZeRO-2/3 gradient reduce-scatters): per block
    max(collective - block compute, f * collective) (prefetch under the previous block; f the
    SMs the collective holds, planner.core.kernels.COMM_SM_FRACTION), plus the first block's
    collective.
    PP sends: v sends of T*h*2/t bytes each way per micro-batch (Megatron scatter/gather).
Pipeline: planner.llm.cost.pipeline. Data parallel (after the last backward):
    ZeRO-0: all-reduce of gradients over the dp x cp group.
    ZeRO-1: reduce-scatter of gradients + all-gather of bf16 weights over the shard group,
    and (HSDP) an all-reduce of the shard across replicas. ZeRO-2 reduce-scatters every
    micro-batch (in the stage terms) and gathers weights after the step; ZeRO-3 gathers too.
    With overlap, communication hides under the stage's last backward (gradients) or first
    forward (weights) except the last bucket and the SMs it holds (COMM_SM_FRACTION of the
    hidden part); stage i ends sum_{j<i} B_j before stage 0,
    which is its slack.
Gradient accumulation outside the GEMMs (the profile's grad_accum_bytes per parameter,
DeepSpeed's BF16_Optimizer: 18 B) is a memory-bound pass over the stage's parameters after every
micro-batch's backward, in the stage's backward time.
Tied embeddings (pp > 1): the first and last stages all-reduce the embedding gradient (two
members: one transfer of the table each way, i.e. one p2p time).
Optimizer: Adam reads the gradient, reads and writes master weights and moments, writes
bf16 weights: memory-bound over the local shard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.core import kernels
from planner.core.collectives import collective_time_by_tier, collective_time_s, members_per_tier, p2p_time_s
from planner.core.errors import PlanError
from planner.llm.cost import flops
from planner.llm.cost.blocks import Blocks, block_costs, block_params, layer_mix, mtp_layers
from planner.llm.cost.breakdown import Breakdown, StageReport
from planner.llm.cost.edges import EdgeCost, edge_cost
from planner.llm.cost.layout import PlanVars, group_members, pp_hop_crosses, strides_for
from planner.llm.cost.memory import stage_expert_params, stage_memory, stage_params
from planner.llm.cost.pipeline import pipeline_time_s
from planner.llm.plan import Plan, check_plan
from planner.llm.problem import Problem


@dataclass(frozen=True)
class StageSpec:
    """A stage (or `count` identical stages) of the pipeline; `moe_layers` of its `layers`
    blocks are MoE blocks (planner.llm.cost.blocks)."""

    index: object
    layers: object
    recomputed: object
    is_first: object
    is_last: object
    count: object = 1
    moe_layers: object = 0


@dataclass(frozen=True)
class StageTerms:
    """Per-micro-batch seconds of one stage, by part."""

    compute_s: object
    recompute_s: object
    tp_s: object
    cp_s: object
    p2p_s: object
    zero_s: object
    forward_s: object
    backward_s: object
    ep_s: object = 0.0

    @property
    def total_s(self):
        return self.forward_s + self.backward_s


def _groups(problem: Problem, v: PlanVars):
    """(gradient group, shard group, replica group) member counts per tier."""
    cluster = problem.cluster
    grad = group_members(cluster, v, ("cp", "dp"))
    shard = np.asarray(v.shard_size, dtype=float)
    dp = np.asarray(v.dp, dtype=float)
    from planner.core.collectives import members_per_tier

    shard_group = members_per_tier(cluster, [v.cp, shard], [v.strides["cp"], v.strides["dp"]])
    replica_group = members_per_tier(cluster, [dp / shard], [np.asarray(v.strides["dp"]) * shard])
    return grad, shard_group, replica_group


def expert_group(problem: Problem, v: PlanVars) -> list:
    """Members per tier of the expert data-parallel group (EDP ranks, stride etp * ep)."""
    return members_per_tier(problem.cluster, [v.edp], [np.asarray(v.etp) * np.asarray(v.ep)])


def stage_terms(problem: Problem, v: PlanVars, blocks: Blocks, edges: EdgeCost, spec: StageSpec) -> StageTerms:
    """Per-micro-batch seconds of a stage (see the module doc). Its blocks: layers - moe_layers
    dense, moe_layers MoE, and on the last stage the MTP modules (an MoE block, a projection
    and a second pass through the head each)."""
    model, cluster = problem.model, problem.cluster
    device, precision = cluster.device, problem.task.precision
    layers = np.asarray(spec.layers, dtype=float)
    moe = np.asarray(spec.moe_layers, dtype=float)
    dense = layers - moe
    recomputed = np.asarray(spec.recomputed, dtype=float)
    first, last = np.asarray(spec.is_first, dtype=bool), np.asarray(spec.is_last, dtype=bool)
    mtp = np.where(last, float(mtp_layers(problem)), 0.0)
    moe_all = moe + mtp
    t = np.asarray(v.tp, dtype=float)
    vs = np.asarray(v.virtual_stages, dtype=float)
    recompute = np.asarray(v.recompute)
    tokens = blocks.tokens

    # MTP: the 2h -> h projection GEMM (forward; backward twice) and a second head pass.
    h = model.hidden_size
    mtp_proj = kernels.gemm_time_s(tokens * 2.0 * 2 * h * h / t, 1, device, precision)
    compute_f = blocks.total("compute_fwd_s", dense, moe_all) + np.where(first, edges.embedding_fwd_s, 0.0)
    compute_f = compute_f + np.where(last, edges.head_fwd_s, 0.0) + mtp * (mtp_proj + edges.head_fwd_s)
    compute_b = blocks.total("compute_bwd_s", dense, moe_all) + np.where(first, edges.embedding_bwd_s, 0.0)
    compute_b = compute_b + np.where(last, edges.head_bwd_s, 0.0) + mtp * (2 * mtp_proj + edges.head_bwd_s)
    selective = np.where(recompute == 1, blocks.total("selective_recompute_s", dense, moe), 0.0)
    # Full recompute re-runs a block's forward; in MoE models it applies to MoE blocks only.
    recompute_s = recomputed * blocks.recomputed("full_recompute_s") + selective

    head_tp = (1.0 + mtp) * edges.head_tp_s / 2
    tp_f = blocks.total("tp_exposed_fwd_s", dense, moe_all) + np.where(first, edges.embedding_tp_s / 2, 0.0)
    tp_f = tp_f + np.where(last, head_tp, 0.0)
    tp_b = blocks.total("tp_exposed_bwd_s", dense, moe_all) + np.where(first, edges.embedding_tp_s / 2, 0.0)
    tp_b = tp_b + np.where(last, head_tp, 0.0)
    cp_f = blocks.total("cp_exposed_fwd_s", dense, moe_all)
    cp_b = blocks.total("cp_exposed_bwd_s", dense, moe_all)
    ep_f = blocks.total("ep_exposed_fwd_s", dense, moe_all)
    ep_b = blocks.total("ep_exposed_bwd_s", dense, moe_all)

    p2p_bytes = tokens * model.hidden_size * 2.0 / t
    hop = p2p_time_s(p2p_bytes, pp_hop_crosses(cluster, v), cluster)
    if problem.task.framework.overlap_p2p_comm:
        # Each send overlaps the next chunk's compute (Megatron-Core overlap_p2p_comm), which only
        # the interleaved schedule implements: Megatron-LM turns it off without virtual stages
        # (megatron/training/arguments.py core_v0.16.0 l.584-591: "non-interleaved schedule does not
        # support overlapping p2p communication") and Megatron-Bridge sets it only for vp > 1
        # (training/comm_overlap.py v0.2.2 l.450-457); 1F1B waits on each batched send/recv (so does
        # torch.distributed.pipelining's Schedule1F1B, schedules.py: each fused send/recv is waited on).
        chunk_s = (blocks.total("compute_fwd_s", dense, moe) + blocks.total("compute_bwd_s", dense, moe)) / (2 * vs)
        hop = np.where(vs > 1, kernels.contended_exposed_s(hop, chunk_s), hop)
    p2p_one_way = np.where(np.asarray(v.pp) > 1, vs * hop, 0.0)

    # ZeRO-2 and -3 keep only a shard of the gradients, so every micro-batch reduce-scatters
    # each block's gradients (hidden under the next block's backward); ZeRO-3 also gathers
    # each block's weights before its forward and its backward (prefetched likewise). MoE
    # blocks gather their grid part over the shard group and their experts over EDP.
    zero3 = np.asarray(v.zero_stage) >= 3
    zero2 = np.asarray(v.zero_stage) == 2
    _, shard_group, _ = _groups(problem, v)
    params = block_params(problem, v)
    grad_bytes = 4.0 if problem.task.framework.grad_dtype == "fp32" else 2.0

    def gathers(grid, expert):
        gather = collective_time_s("all_gather", grid * 2.0, shard_group, cluster)
        scatter = collective_time_s("reduce_scatter", grid * grad_bytes, shard_group, cluster)
        if blocks.moe is not None:
            experts = expert_group(problem, v)
            gather = gather + collective_time_s("all_gather", expert * 2.0, experts, cluster)
            scatter = scatter + collective_time_s("reduce_scatter", expert * grad_bytes, experts, cluster)
        return gather, scatter

    gather_d, scatter_d = gathers(params.dense, 0.0)
    gather_m, scatter_m = gathers(params.moe_grid, params.moe_expert)

    def exposed(count, gather, scatter, block):
        # Prefetched under a block's compute: what does not fit, or the SMs the collective holds.
        z_f = count * kernels.contended_exposed_s(gather, block.fwd_s)
        z_b = count * kernels.contended_exposed_s(gather + scatter, block.bwd_s)
        z2_b = count * kernels.contended_exposed_s(scatter, block.bwd_s)
        return z_f, z_b, z2_b

    z_f, z_b, z2_b = exposed(dense, gather_d, scatter_d, blocks.dense)
    first_gather, first_scatter = gather_d, scatter_d
    if blocks.moe is not None:
        mf, mb, m2 = exposed(moe_all, gather_m, scatter_m, blocks.moe)
        z_f, z_b, z2_b = z_f + mf, z_b + mb, z2_b + m2
        # The first block's collective is never hidden: the larger kind present.
        first_gather = np.where(moe_all > 0, np.maximum(gather_m, np.where(dense > 0, gather_d, 0.0)), gather_d)
        first_scatter = np.where(moe_all > 0, np.maximum(scatter_m, np.where(dense > 0, scatter_d, 0.0)), scatter_d)
    z_f = np.where(zero3, z_f + first_gather, 0.0)
    z_b = np.where(zero3, z_b + first_scatter, np.where(zero2, z2_b + first_scatter, 0.0))

    # FSDP2's copies on the compute stream (profile fact fsdp2_copies): after each all-gather the
    # gathered buffer is copied out into the unsharded parameters (split_with_sizes_copy: read
    # 2 B, write 2 B per parameter), and before each reduce-scatter the unsharded bf16 gradients
    # are copied into its input in the reduce dtype (chunk_cat: read 2 B, write grad_bytes).
    # With a pipeline that keeps parameters unsharded (pp_keeps_unsharded) both happen once per
    # step, not per micro-batch: not priced here. Not modelled: torchtitan's last block keeps its
    # parameters after the forward (no backward re-gather) and the root module's (embedding, norm,
    # head) gathers; with FSDP float8 all-gathers the copy-out moves 1-byte weights.
    facts = problem.task.framework.facts
    if facts.fsdp2_copies:
        unsharded = dense * params.dense + moe_all * (params.moe_grid + params.moe_expert)
        # A shard group of one GPU (no CP, shard size 1) is not FSDP-sharded: nothing is gathered.
        sharded = np.asarray(v.cp, dtype=float) * np.asarray(v.shard_size, dtype=float) > 1
        per_micro_batch = ~((np.asarray(v.pp) > 1) & facts.pp_keeps_unsharded) & sharded
        copy_out = kernels.memory_bound_time_s(4.0 * unsharded, device)
        copy_in = kernels.memory_bound_time_s((2.0 + grad_bytes) * unsharded, device)
        z_f = z_f + np.where(zero3 & per_micro_batch, copy_out, 0.0)
        z_b = z_b + np.where(zero3 & per_micro_batch, copy_out, 0.0) + np.where(
            (zero3 | zero2) & per_micro_batch, copy_in, 0.0)

    # Gradient accumulation outside the GEMMs (DeepSpeed's BF16_Optimizer): a memory-bound pass
    # over the stage's parameters after every micro-batch's backward (the profile's bytes).
    accum_bytes = facts.grad_accum_bytes
    if facts.fsdp_pp_grad_accumulation and problem.task.framework.grad_dtype == "fp32":
        # FSDP2 with a pipeline (torch _fsdp_param.py to_accumulated_grad_if_needed and
        # accumulate_unsharded_grad_if_needed, called by FSDPParamGroup.post_backward while
        # gradient sync is off): micro-batch 1 casts its bf16 gradient to fp32 (6 B per
        # parameter), the later ones add theirs into it (10 B). Priced at 10 B for every
        # micro-batch, so that a stage's micro-batch time does not depend on their number (the
        # free batch's argument, planner.llm.space.batch_choices): over by 4 B per parameter
        # once per step (10 B with a single micro-batch, which accumulates nothing).
        fsdp_pp = (np.asarray(v.pp) > 1) & (np.asarray(v.zero_stage) >= 3)
        accum_bytes = accum_bytes + np.where(fsdp_pp, 10.0, 0.0)
    accumulate = 0.0
    if np.any(accum_bytes):
        held = stage_params(problem, v, layers, first, last, moe) + stage_expert_params(problem, v, last, moe)
        accumulate = kernels.memory_bound_time_s(accum_bytes * held, device)
    compute_b = compute_b + accumulate

    forward = compute_f + tp_f + cp_f + ep_f + p2p_one_way + z_f
    backward = compute_b + recompute_s + tp_b + cp_b + ep_b + p2p_one_way + z_b
    return StageTerms(
        compute_s=compute_f + compute_b,
        recompute_s=recompute_s,
        tp_s=tp_f + tp_b,
        cp_s=cp_f + cp_b,
        p2p_s=2 * p2p_one_way,
        zero_s=z_f + z_b,
        forward_s=forward,
        backward_s=backward,
        ep_s=ep_f + ep_b,
    )


@dataclass(frozen=True)
class DataParallelRaw:
    """Data-parallel communication and optimizer time of one stage, before overlap.

    Exposure after overlap (seconds):
        gradients: max(grad_s - grad_window * B, grad_floor_s)
        weights:   max(param_s - param_window * F, param_floor_s)
    where B and F are the stage's backward and forward time of one micro-batch, the windows
    are 1 with overlap and 0 without, and the floors (the never-hidden part) are the whole
    collective without overlap; with it, the last (first) bucket plus f of the other buckets'
    time, f = COMM_SM_FRACTION (planner.core.kernels): the buckets that run beside compute hold
    SMs the compute lacks. The stage tables, bounds and CP-SAT model read these fields.
    grad_last_s / param_first_s are the never-hidden bucket alone (the whole collective without
    overlap): floor = (1 - f) * bucket + f * collective, which the bounds take apart.
    """

    grad_s: object
    grad_floor_s: object
    grad_window: float
    param_s: object
    param_floor_s: object
    param_window: float
    optimizer_s: object
    grad_tiers: list
    param_tiers: list
    grad_last_s: object = 0.0
    param_first_s: object = 0.0

    def exposed(self, forward_s, backward_s):
        grad = np.maximum(self.grad_s - self.grad_window * backward_s, self.grad_floor_s)
        param = np.maximum(self.param_s - self.param_window * forward_s, self.param_floor_s)
        return grad, param


def data_parallel_raw(problem: Problem, v: PlanVars, spec: StageSpec) -> DataParallelRaw:
    """Gradient reduction, weight gather and Adam step of one stage (see module doc). Routed
    experts reduce and shard over the expert data-parallel group instead (their own buckets,
    after the rest)."""
    cluster, framework = problem.cluster, problem.task.framework
    params = stage_params(problem, v, spec.layers, spec.is_first, spec.is_last, spec.moe_layers)
    zero = np.asarray(v.zero_stage)
    shard = np.asarray(v.shard_size, dtype=float)
    grad_bytes = 4.0 if framework.grad_dtype == "fp32" else 2.0
    grad_group, shard_group, replica_group = _groups(problem, v)

    g_bytes = params * grad_bytes
    ar_all = collective_time_by_tier("all_reduce", g_bytes, grad_group, cluster)
    rs = collective_time_by_tier("reduce_scatter", g_bytes, shard_group, cluster)
    ar_rep = collective_time_by_tier(
        "all_reduce", g_bytes / (shard * np.asarray(v.cp, dtype=float)), replica_group, cluster
    )
    ag = collective_time_by_tier("all_gather", params * 2.0, shard_group, cluster)
    # ZeRO-1 whose optimizer all-reduces the whole gradient before stepping its shard (the
    # profile fact zero1_grad_all_reduce: DeepSpeed's BF16_Optimizer) reduces like ZeRO-0.
    all_reduced = (zero == 0) | ((zero == 1) & bool(problem.task.framework.facts.zero1_grad_all_reduce))
    grad_tiers = [
        np.where(all_reduced, a, np.where(zero >= 2, r2, r + r2))
        for a, r, r2 in zip(ar_all, rs, ar_rep, strict=True)
    ]
    param_tiers = [np.where((zero >= 1) & (zero <= 2), g, 0.0) for g in ag]
    local = params / np.where(zero >= 1, shard * np.asarray(v.cp, dtype=float), 1.0)
    all_bytes = params
    if problem.model.family == "moe":
        experts = stage_expert_params(problem, v, spec.is_last, spec.moe_layers)
        group = expert_group(problem, v)
        e_bytes = experts * grad_bytes
        e_ar = collective_time_by_tier("all_reduce", e_bytes, group, cluster)
        e_rs = collective_time_by_tier("reduce_scatter", e_bytes, group, cluster)
        e_ag = collective_time_by_tier("all_gather", experts * 2.0, group, cluster)
        grad_tiers = [g + np.where(zero == 0, a, r) for g, a, r in zip(grad_tiers, e_ar, e_rs, strict=True)]
        param_tiers = [p + np.where((zero >= 1) & (zero <= 2), a, 0.0) for p, a in zip(param_tiers, e_ag, strict=True)]
        local = local + experts / np.where(zero >= 1, np.asarray(v.edp, dtype=float), 1.0)
        all_bytes = params + experts
    grad_s, param_s = sum(grad_tiers), sum(param_tiers)

    bucket = framework.grad_bucket_bytes
    if framework.overlap_grad_reduce:
        last = grad_s * np.minimum(1.0, bucket / np.maximum(all_bytes * grad_bytes, 1.0))
    else:
        last = grad_s
    if framework.overlap_param_gather:
        first = param_s * np.minimum(1.0, bucket / np.maximum(all_bytes * 2.0, 1.0))
    else:
        first = param_s
    # The overlapped buckets' SMs (see DataParallelRaw); without overlap the floor is all of it.
    grad_floor = kernels.contended_floor_s(last, grad_s)
    param_floor = kernels.contended_floor_s(first, param_s)

    opt = problem.task.optimizer
    step_bytes = grad_bytes + (8.0 if opt.master_weights else 0.0) + 8.0 * opt.num_states + 2.0
    if problem.task.framework.facts.optimizer_step_bytes is not None:  # the profile's own step
        step_bytes = problem.task.framework.facts.optimizer_step_bytes
    optimizer_s = kernels.memory_bound_time_s(local * step_bytes, cluster.device)
    return DataParallelRaw(
        grad_s=grad_s,
        grad_floor_s=grad_floor,
        grad_window=1.0 if framework.overlap_grad_reduce else 0.0,
        param_s=param_s,
        param_floor_s=param_floor,
        param_window=1.0 if framework.overlap_param_gather else 0.0,
        optimizer_s=optimizer_s,
        grad_tiers=grad_tiers,
        param_tiers=param_tiers,
        grad_last_s=last,
        param_first_s=first,
    )


def tied_embedding_sync_s(problem: Problem, v: PlanVars):
    """All-reduce of the tied word-embedding gradient between the first and last stages.

    With tied embeddings and pp > 1 both edge stages hold the V x h/t table; Megatron sums
    their gradients after the backward pass, before the optimizer, without overlap.
    """
    model, cluster = problem.model, problem.cluster
    if not model.tied_embeddings:
        return 0.0
    grad_bytes = 4.0 if problem.task.framework.grad_dtype == "fp32" else 2.0
    size = model.vocab_size * model.hidden_size / np.asarray(v.tp, dtype=float) * grad_bytes
    hop = p2p_time_s(size, pp_hop_crosses(cluster, v), cluster)
    return np.where(np.asarray(v.pp) > 1, hop, 0.0)


def plan_stage_specs(plan: Plan, problem: Problem) -> list[StageSpec]:
    """One StageSpec per pipeline stage of a concrete plan."""
    layers = plan.layers_per_stage(problem.model.num_layers)
    moe = layer_mix(problem.model, layers, plan.virtual_stages)
    recomputed = plan.recomputed_layers(problem.model.num_layers, moe if problem.model.family == "moe" else None)
    return [
        StageSpec(index=i, layers=n, recomputed=r, is_first=i == 0, is_last=i == plan.pp - 1, moe_layers=k)
        for i, (n, r, k) in enumerate(zip(layers, recomputed, moe, strict=True))
    ]


@dataclass(frozen=True)
class Assembled:
    """A priced step (scalars or arrays over candidates); see the module docstring."""

    step_s: object
    pipeline_s: object
    bubble_s: object
    grad_exposed_s: object
    param_exposed_s: object
    embedding_sync_s: object
    optimizer_s: object
    peak_memory_bytes: object
    terms: list
    memories: list
    data_parallel: list


def assemble(problem: Problem, v: PlanVars, specs: list[StageSpec], num_micro_batches) -> Assembled:
    """Step time and peak memory from stage specs, in order of stage index.

    Each spec stands for `count` consecutive stages starting at `index` (identical in time);
    its memory and data-parallel exposure are those of its first stage, the worst of the
    group (most micro-batches in flight, least slack). A spec with count 0 is ignored.
    Stage k ends its last backward sum_{j<k} B_j before stage 0 does: that is its slack.
    """
    blocks = block_costs(problem, v)
    edges = edge_cost(problem, v, blocks.tokens)
    terms = [stage_terms(problem, v, blocks, edges, s) for s in specs]
    counts = [s.count for s in specs]
    pipeline_s, bubble_s, _ = pipeline_time_s(
        [x.total_s for x in terms], counts, num_micro_batches, v.virtual_stages
    )
    grad_exposed = param_exposed = optimizer_s = peak = 0.0
    slack_b = slack_f = 0.0
    memories, data_parallel = [], []
    for spec, x in zip(specs, terms, strict=True):
        active = np.asarray(spec.count) > 0
        raw = data_parallel_raw(problem, v, spec)
        g, p = raw.exposed(x.forward_s, x.backward_s)
        o = raw.optimizer_s
        grad_exposed = np.maximum(grad_exposed, np.where(active, g - slack_b, 0.0))
        param_exposed = np.maximum(param_exposed, np.where(active, p - slack_f, 0.0))
        optimizer_s = np.maximum(optimizer_s, np.where(active, o, 0.0))
        mem = stage_memory(
            problem, v, blocks, spec.layers, spec.recomputed, spec.index, spec.is_first, spec.is_last,
            num_micro_batches, edges.logits_bytes, spec.moe_layers,
        )
        peak = np.maximum(peak, np.where(active, mem.total_bytes, 0.0))
        slack_b = slack_b + spec.count * x.backward_s
        slack_f = slack_f + spec.count * x.forward_s
        memories.append(mem)
        data_parallel.append((g, p, o, (raw.grad_tiers, raw.param_tiers)))
    embedding_sync = tied_embedding_sync_s(problem, v)
    step = pipeline_s + grad_exposed + param_exposed + embedding_sync + optimizer_s
    return Assembled(
        step_s=step,
        pipeline_s=pipeline_s,
        bubble_s=bubble_s,
        grad_exposed_s=grad_exposed,
        param_exposed_s=param_exposed,
        embedding_sync_s=embedding_sync,
        optimizer_s=optimizer_s,
        peak_memory_bytes=peak,
        terms=terms,
        memories=memories,
        data_parallel=data_parallel,
    )


def evaluate(problem: Problem, plan: Plan) -> Breakdown:
    """Prices one plan: the full breakdown, per-stage memory and throughput metrics.

    Raises:
        PlanError: the plan is inconsistent with the problem (`check_plan`).
    """
    errors = check_plan(plan, problem)
    if errors:
        raise PlanError(errors)
    model, task, cluster = problem.model, problem.task, problem.cluster
    v = PlanVars.from_plan(plan)
    m = plan.num_micro_batches(plan.sequences(task))
    specs = plan_stage_specs(plan, problem)
    a = assemble(problem, v, specs, m)
    stage_times = [float(x.total_s) for x in a.terms]
    critical = int(np.argmax(stage_times))
    crit = a.terms[critical]
    capacity = cluster.device.hbm_bytes * (1.0 - task.memory_headroom)
    stages = []
    for spec, x, mem in zip(specs, a.terms, a.memories, strict=True):
        mem = type(mem)(**{k: float(getattr(mem, k)) for k in mem.__dataclass_fields__})
        stages.append(
            StageReport(
                index=int(spec.index),
                layers=int(spec.layers),
                recomputed_layers=int(spec.recomputed),
                has_embedding=bool(spec.is_first),
                has_head=bool(spec.is_last),
                forward_s=float(x.forward_s),
                backward_s=float(x.backward_s),
                memory=mem,
                capacity_bytes=capacity,
                moe_layers=int(spec.moe_layers),
                mtp_layers=mtp_layers(problem) if spec.is_last else 0,
            )
        )

    step = float(a.step_s)
    tokens = plan.sequences(task) * task.seq_len
    model_flops = flops.model_flops_per_token(model, task.seq_len) * tokens
    hardware_flops = flops.hardware_flops_per_token(model, task.seq_len, plan.recompute, plan.selective_modules) * tokens
    peak = cluster.device.peak("fp16" if task.precision == "fp16" else "bf16") * cluster.num_devices
    blocks = block_costs(problem, v)
    by_axis = _exposed_by_axis_tier(problem, v, blocks, crit, a.data_parallel, critical, m)
    return Breakdown(
        step_time_s=step,
        compute_s=m * float(crit.compute_s),
        recompute_s=m * float(crit.recompute_s),
        tp_exposed_s=m * float(crit.tp_s),
        cp_exposed_s=m * float(crit.cp_s),
        pp_p2p_s=m * float(crit.p2p_s),
        zero_exposed_s=m * float(crit.zero_s),
        bubble_s=float(a.bubble_s),
        dp_exposed_s=float(a.grad_exposed_s) + float(a.param_exposed_s),
        embedding_sync_s=float(a.embedding_sync_s),
        optimizer_s=float(a.optimizer_s),
        exposed_by_axis_tier=by_axis,
        tokens_per_s=tokens / step,
        tokens_per_s_per_gpu=tokens / step / cluster.num_devices,
        model_flops_per_step=model_flops,
        hardware_flops_per_step=hardware_flops,
        mfu=model_flops / (step * peak),
        hfu=hardware_flops / (step * peak),
        num_micro_batches=m,
        critical_stage=critical,
        stages=stages,
        ep_exposed_s=m * float(crit.ep_s),
    )


def _split(total: float, raw_by_tier: list, names: list[str]) -> dict[str, float]:
    """Attributes an exposed total to tiers in proportion to the raw per-tier time."""
    raw = [float(np.asarray(x)) for x in raw_by_tier]
    whole = sum(raw)
    if total <= 0 or whole <= 0:
        return {}
    return {n: total * r / whole for n, r in zip(names, raw, strict=True) if r > 0}


def _exposed_by_axis_tier(problem, v, blocks: Blocks, crit, dp, critical, m) -> dict[str, dict[str, float]]:
    names = [tier.name for tier in problem.cluster.tiers]
    layer = blocks.moe if blocks.moe is not None else blocks.dense
    result = {
        "tp": _split(m * float(crit.tp_s), [a + b for a, b in zip(layer.tp_fwd_by_tier, layer.tp_bwd_by_tier, strict=True)], names),
        "cp": _split(m * float(crit.cp_s), [a + b for a, b in zip(layer.cp_fwd_by_tier, layer.cp_bwd_by_tier, strict=True)], names),
    }
    if blocks.moe is not None:
        result["ep"] = _split(m * float(crit.ep_s), [a + b for a, b in zip(layer.ep_fwd_by_tier, layer.ep_bwd_by_tier, strict=True)], names)
    grad_tiers, param_tiers = dp[critical][3]
    dp_total = max(float(dp[critical][0]), 0.0) + max(float(dp[critical][1]), 0.0)
    result["dp"] = _split(dp_total, [g + p for g, p in zip(grad_tiers, param_tiers, strict=True)], names)
    # A pipeline hop runs over the outermost tier it crosses (planner.core.collectives.p2p_time_s).
    crossed = [i for i, c in enumerate(pp_hop_crosses(problem.cluster, v)) if bool(np.asarray(c))]
    result["pp"] = {names[max(crossed)]: m * float(crit.p2p_s)} if float(crit.p2p_s) > 0 else {}
    return {axis: parts for axis, parts in result.items() if parts}


__all__ = ["StageSpec", "assemble", "data_parallel_raw", "evaluate", "plan_stage_specs", "stage_terms", "strides_for"]
