"""The DLRM training step: the embedding loads of planner.recsys.loads plus the dense part.

Times of the embedding phases (the busiest rank sets each phase's pace: the all-to-alls and the
dense part synchronise every rank):
    lookup_fwd   max over ranks of forward lookup bytes / achievable HBM bandwidth
    lookup_bwd   the same for the backward with the fused optimizer
    out a2a      max over ranks and tiers of max(sent, received) bytes / (bandwidth * efficiency),
                 plus the tier's latency: links are full duplex and every tier moves its share
                 at once; the backward moves the gradients the reverse way
    ids a2a      likewise for the ids and lengths
Dense part (MLPs and interaction, data-parallel over the ranks, or TP groups inside a host):
    GEMMs by planner.core.kernels (one call per layer), bias/activation passes memory-bound;
    backward = 2x forward GEMM FLOPs; gradient sync: DDP all-reduce over all ranks (TP: over
    the TP groups' replicas, of 1/tp of the parameters), FSDP all-gather forward and backward
    plus a reduce-scatter; the data-parallel tables' gradients join the all-reduce.
The step (TorchRec DistributedModelParallel with TrainPipelineSparseDist; overlaps stated):
    forward   lookup_fwd + max(out a2a, bottom MLP fwd) + interaction and top MLP fwd
              (the bottom MLP runs while the pooled embeddings are in flight)
    backward  top and interaction bwd + max(out a2a bwd, bottom MLP bwd) + lookup_bwd
    sync      the gradient all-reduce starts after the top MLP's backward and hides under the
              rest of the backward: exposed = max(0, all-reduce - (max(a2a bwd, bottom bwd)
              + lookup_bwd))
    FSDP      gathers prefetched under the layer compute: exposed max(0, gathers - compute)
    TP        activation all-reduces (every second layer, forward and backward) exposed
    optimizer the dense optimizer's pass over its parameter shard (HBM-bound)
    step      max(the above chain, ids a2a) with the pipelined input dist (the next batch's ids
              move under this step), else their sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from planner.core import kernels
from planner.core.collectives import collective_time_s, members_per_tier
from planner.recsys.loads import RankLoads, Topology, plan_loads
from planner.recsys.model import DTYPE_BYTES
from planner.recsys.plan import ShardingPlan
from planner.recsys.problem import RecsysProblem
from planner.recsys.task import DENSE_OPTIMIZER_STATE_BYTES


@dataclass
class RecsysBreakdown:
    """Where one step's time goes; the parts sum to `step_time_s`."""

    lookup_fwd_s: float
    out_a2a_fwd_exposed_s: float
    dense_fwd_s: float
    dense_bwd_s: float
    out_a2a_bwd_exposed_s: float
    lookup_bwd_s: float
    sync_exposed_s: float
    tp_exposed_s: float
    fsdp_exposed_s: float
    optimizer_s: float
    ids_a2a_exposed_s: float
    step_time_s: float
    # Not parts of the sum: the phases before overlap, and what they come from.
    out_a2a_s: float = 0.0
    ids_a2a_s: float = 0.0
    sync_s: float = 0.0
    busiest_lookup_rank: int = 0
    busiest_a2a_rank: int = 0
    samples_per_s: float = 0.0
    peak_memory_bytes: float = 0.0
    memory_capacity_bytes: float = 0.0
    peak_memory_rank: int = 0
    memory_by_part: dict = field(default_factory=dict)
    """The peak rank's memory: embeddings (shards, optimizer, buffers), dense, activations, other."""

    PARTS = ("lookup_fwd_s", "out_a2a_fwd_exposed_s", "dense_fwd_s", "dense_bwd_s", "out_a2a_bwd_exposed_s",
             "lookup_bwd_s", "sync_exposed_s", "tp_exposed_s", "fsdp_exposed_s", "optimizer_s",
             "ids_a2a_exposed_s")

    @property
    def fits(self) -> bool:
        return self.peak_memory_bytes <= self.memory_capacity_bytes


def a2a_time_s(problem: RecsysProblem, send: np.ndarray, recv: np.ndarray) -> tuple[float, int]:
    """(all-to-all time, the rank that sets it) from per-rank, per-tier bytes: the slowest rank
    and tier, max(sent, received) / (bandwidth * efficiency), plus the latency of every tier
    that carries any traffic."""
    volume = np.maximum(send, recv)
    time_s = a2a_time_from_peaks_s(problem, volume.max(axis=0))
    worst = np.zeros(send.shape[0])
    for t, tier in enumerate(problem.cluster.tiers):
        if volume[:, t].max() > 0:
            worst = np.maximum(worst, tier.latency_s + volume[:, t] / (tier.bandwidth_bytes_per_s * tier.efficiency))
    return float(time_s), int(np.argmax(worst))


def a2a_time_from_peaks_s(problem: RecsysProblem, peak_bytes: np.ndarray):
    """The all-to-all time from the largest max(sent, received) bytes of any rank on each tier
    (last axis; leading axes price alternatives at once): every rank takes part in the collective,
    so a tier that carries any traffic adds its latency."""
    time_s = np.zeros(peak_bytes.shape[:-1])
    for t, tier in enumerate(problem.cluster.tiers):
        peak = peak_bytes[..., t]
        time_s = np.maximum(time_s, np.where(peak > 0, tier.latency_s + peak / (tier.bandwidth_bytes_per_s
                                                                                * tier.efficiency), 0.0))
    return time_s


@dataclass
class DenseCost:
    """The dense part of one step on one rank."""

    bottom_fwd_s: float
    top_fwd_s: float
    bottom_bwd_s: float
    top_bwd_s: float
    sync_s: float
    tp_comm_s: float
    fsdp_fwd_comm_s: float
    fsdp_bwd_comm_s: float
    optimizer_s: float
    params_bytes: float
    grads_bytes: float
    optimizer_bytes: float
    activation_bytes: float


def dense_cost(problem: RecsysProblem, plan: ShardingPlan, dp_table_grad_bytes: float = 0.0) -> DenseCost:
    model, task, cluster = problem.model, problem.task, problem.cluster
    device = cluster.device
    world = cluster.num_devices
    strategy = plan.dense.strategy
    tp = plan.dense.tp if strategy == "tp" else 1
    replicas = world // tp
    batch = task.global_batch_size / replicas  # samples per TP group (per rank for DDP/FSDP)
    precision = task.dense_precision
    gemm_precision = precision  # fp32 at the fp32 peak (a device's tf32 rate only for tf32; kernels.gemm_peak)
    act_bytes = DTYPE_BYTES[precision]
    grad_bytes = 4.0 if precision in ("fp32", "tf32") else 2.0
    shapes = model.mlp_shapes()
    num_bottom = len(model.bottom_mlp)

    def gemms(layer_shapes, extra_flops=0.0, extra_calls=0):
        flops = sum(2.0 * i * o for i, o in layer_shapes) * batch / tp + extra_flops
        calls = len(layer_shapes) + extra_calls
        elementwise = sum(o for _, o in layer_shapes) * batch / tp * act_bytes * 3.0  # bias+act: read, write, read
        fwd = float(kernels.gemm_time_s(flops, calls, device, gemm_precision)
                    + kernels.memory_bound_time_s(elementwise, device))
        bwd = float(kernels.gemm_time_s(2.0 * flops, 2 * calls, device, gemm_precision)
                    + kernels.memory_bound_time_s(2.0 * elementwise, device))
        return fwd, bwd

    interaction_flops = model.interaction_flops_per_sample() * batch / tp
    bottom_fwd, bottom_bwd = gemms(shapes[:num_bottom])
    top_fwd, top_bwd = gemms(shapes[num_bottom:], interaction_flops, 1 if interaction_flops else 0)

    params = float(model.dense_params)
    members_all = members_per_tier(cluster, [world], [1])
    sync = fsdp_fwd = fsdp_bwd = tp_comm = 0.0
    if strategy == "fsdp":
        gathered = params * act_bytes
        fsdp_fwd = float(collective_time_s("all_gather", gathered, members_all, cluster))
        fsdp_bwd = fsdp_fwd + float(collective_time_s("reduce_scatter", params * grad_bytes, members_all, cluster))
        shard = world
    else:
        replica_members = members_per_tier(cluster, [replicas], [tp])
        sync = float(collective_time_s("all_reduce", params / tp * grad_bytes, replica_members, cluster))
        shard = tp
    if dp_table_grad_bytes:
        sync += float(collective_time_s("all_reduce", dp_table_grad_bytes, members_all, cluster))
    if tp > 1:
        tp_members = members_per_tier(cluster, [tp], [1])
        pairs = len(shapes) // 2
        per_pair = sum(float(collective_time_s("all_reduce", batch * shapes[2 * k + 1][1] * act_bytes,
                                               tp_members, cluster)) for k in range(pairs))
        tp_comm = 2.0 * per_pair  # forward and backward
    state = DENSE_OPTIMIZER_STATE_BYTES[task.dense_optimizer]
    params_bytes = params / shard * 4.0
    grads_bytes = params / shard * grad_bytes
    optimizer_bytes = params / shard * state
    if strategy == "fsdp":  # the largest layer, gathered while it runs
        params_bytes += max(i * o + o for i, o in shapes) * act_bytes
    optimizer_s = float(kernels.memory_bound_time_s(params / shard * (2 * 4.0 + grad_bytes + 2 * state), device))
    widths = sum(o for _, o in shapes) + model.interaction_input_width + model.interaction_output_width
    activation = 2.0 * widths * batch / tp * act_bytes
    return DenseCost(bottom_fwd, top_fwd, bottom_bwd, top_bwd, sync, tp_comm, fsdp_fwd, fsdp_bwd, optimizer_s,
                     params_bytes, grads_bytes, optimizer_bytes, activation)


def evaluate(problem: RecsysProblem, plan: ShardingPlan, loads: RankLoads | None = None) -> RecsysBreakdown:
    """Prices a plan (see the module doc); `check_plan` must have passed."""
    loads = loads if loads is not None else plan_loads(problem, plan)
    return step_from_loads(problem, plan, loads)


def step_from_phases(problem: RecsysProblem, dense: DenseCost, lookup_fwd_s, lookup_bwd_s, out_a2a_s, ids_a2a_s) -> dict:
    """The step and its parts (RecsysBreakdown.PARTS) from the busiest rank's lookup times and the
    two all-to-all times (floats, or arrays of alternatives priced at once): the critical path of
    the module doc."""
    out_fwd_exposed = np.maximum(out_a2a_s - dense.bottom_fwd_s, 0.0)
    out_bwd_exposed = np.maximum(out_a2a_s - dense.bottom_bwd_s, 0.0)
    hidden_under = dense.bottom_bwd_s + out_bwd_exposed + lookup_bwd_s
    sync_exposed = np.maximum(dense.sync_s - hidden_under, 0.0)
    dense_fwd = dense.bottom_fwd_s + dense.top_fwd_s
    dense_bwd = dense.bottom_bwd_s + dense.top_bwd_s
    fsdp_exposed = max(dense.fsdp_fwd_comm_s - dense_fwd, 0.0) + max(dense.fsdp_bwd_comm_s - dense_bwd, 0.0)
    chain = (lookup_fwd_s + out_fwd_exposed + dense_fwd + dense_bwd + out_bwd_exposed + lookup_bwd_s + sync_exposed
             + dense.tp_comm_s + fsdp_exposed + dense.optimizer_s)
    ids_exposed = np.maximum(ids_a2a_s - chain, 0.0) if problem.task.framework.pipelined_input_dist else ids_a2a_s
    return {"lookup_fwd_s": lookup_fwd_s, "out_a2a_fwd_exposed_s": out_fwd_exposed, "dense_fwd_s": dense_fwd,
            "dense_bwd_s": dense_bwd, "out_a2a_bwd_exposed_s": out_bwd_exposed, "lookup_bwd_s": lookup_bwd_s,
            "sync_exposed_s": sync_exposed, "tp_exposed_s": dense.tp_comm_s, "fsdp_exposed_s": fsdp_exposed,
            "optimizer_s": dense.optimizer_s, "ids_a2a_exposed_s": ids_exposed, "step_time_s": chain + ids_exposed}


def step_from_loads(problem: RecsysProblem, plan: ShardingPlan, loads: RankLoads) -> RecsysBreakdown:
    device = problem.cluster.device
    task = problem.task
    fwd_times = kernels.memory_bound_time_s(loads.lookup_fwd_bytes, device)
    bwd_times = kernels.memory_bound_time_s(loads.lookup_bwd_bytes, device)
    lookup_rank = int(np.argmax(fwd_times + bwd_times))
    lookup_fwd = float(np.max(fwd_times))
    lookup_bwd = float(np.max(bwd_times))
    out_send, out_recv, ids_send, ids_recv = loads.traffic(Topology(problem))
    out_a2a, a2a_rank = a2a_time_s(problem, out_send, out_recv)
    ids_a2a, _ = a2a_time_s(problem, ids_send, ids_recv)
    dense = dense_cost(problem, plan, loads.dp_table_grad_bytes)
    phases = step_from_phases(problem, dense, lookup_fwd, lookup_bwd, out_a2a, ids_a2a)
    step = float(phases["step_time_s"])

    dense_memory = dense.params_bytes + dense.grads_bytes + dense.optimizer_bytes
    other = task.framework.framework_overhead_bytes
    total = loads.memory_bytes + dense_memory + dense.activation_bytes + other
    peak_rank = int(np.argmax(total))
    capacity = device.hbm_bytes * (1.0 - task.memory_headroom)
    return RecsysBreakdown(
        **{part: float(phases[part]) for part in RecsysBreakdown.PARTS}, step_time_s=step, out_a2a_s=out_a2a,
        ids_a2a_s=ids_a2a, sync_s=dense.sync_s, busiest_lookup_rank=lookup_rank,
        busiest_a2a_rank=a2a_rank, samples_per_s=task.global_batch_size / step,
        peak_memory_bytes=float(total[peak_rank]), memory_capacity_bytes=capacity, peak_memory_rank=peak_rank,
        memory_by_part={"embeddings": float(loads.memory_bytes[peak_rank]), "dense": dense_memory,
                        "activations": dense.activation_bytes, "other": other},
    )


__all__ = ["RecsysBreakdown", "Topology", "dense_cost", "evaluate", "step_from_loads", "step_from_phases",
           "a2a_time_from_peaks_s"]
