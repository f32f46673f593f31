"""Plain-text and JSON renderings of a priced embedding-sharding plan."""

from __future__ import annotations

from typing import Any

import numpy as np

from planner.core.units import format_bytes, format_seconds
from planner.recsys.cost import RecsysBreakdown
from planner.recsys.loads import RankLoads
from planner.recsys.plan import ShardingPlan
from planner.recsys.problem import RecsysProblem
from planner.report.estimate import table

PART_LABELS = {
    "lookup_fwd_s": "embedding lookup fwd",
    "out_a2a_fwd_exposed_s": "output all-to-all fwd (exposed)",
    "dense_fwd_s": "dense fwd (MLPs, interaction)",
    "dense_bwd_s": "dense bwd",
    "out_a2a_bwd_exposed_s": "output all-to-all bwd (exposed)",
    "lookup_bwd_s": "embedding bwd + fused optimizer",
    "sync_exposed_s": "gradient all-reduce (exposed)",
    "tp_exposed_s": "dense TP all-reduces",
    "fsdp_exposed_s": "dense FSDP gathers (exposed)",
    "optimizer_s": "dense optimizer",
    "ids_a2a_exposed_s": "ids all-to-all (exposed)",
}


def problem_line(problem: RecsysProblem) -> str:
    model, cluster, task = problem.model, problem.cluster, problem.task
    return (f"problem  {model.name}: {model.num_tables:,} tables, {model.embedding_params / 1e9:,.2f} B embedding "
            f"parameters, on {cluster.num_devices} x {cluster.device.name} ({cluster.name}); batch "
            f"{task.global_batch_size:,} ({problem.local_batch_size:,} per rank)")


def render_recsys_estimate(problem: RecsysProblem, plan: ShardingPlan, b: RecsysBreakdown,
                           loads: RankLoads) -> str:
    lines = [
        problem_line(problem),
        f"plan     {plan.summary()}",
        "",
        f"step time      {format_seconds(b.step_time_s)}",
        f"throughput     {b.samples_per_s:,.0f} samples/s  ({b.samples_per_s / problem.cluster.num_devices:,.0f} per GPU)",
        f"peak memory    {format_bytes(b.peak_memory_bytes)} on rank {b.peak_memory_rank} of "
        f"{format_bytes(b.memory_capacity_bytes)} usable",
        "",
        "where the step time goes",
    ]
    rows = [[PART_LABELS[k], format_seconds(getattr(b, k)), f"{100 * getattr(b, k) / b.step_time_s:.1f}%"]
            for k in b.PARTS if getattr(b, k) > 0]
    rows.append(["total", format_seconds(b.step_time_s), "100.0%"])
    lines.append(table(rows, ["part", "time", "share"]))
    lines += [
        "",
        f"phases before overlap: output all-to-all {format_seconds(b.out_a2a_s)} each way (set by rank "
        f"{b.busiest_a2a_rank}), ids all-to-all {format_seconds(b.ids_a2a_s)}, gradient all-reduce "
        f"{format_seconds(b.sync_s)}; busiest lookup rank {b.busiest_lookup_rank}",
        "",
        "ranks (busiest by lookup time, and the peak-memory rank)",
    ]
    device = problem.cluster.device
    bw = device.hbm_bandwidth_bytes_per_s * device.efficiency.hbm_fraction
    lookup = (loads.lookup_fwd_bytes + loads.lookup_bwd_bytes) / bw
    memory = loads.memory_bytes + (b.peak_memory_bytes - loads.memory_bytes[b.peak_memory_rank])
    order = list(np.argsort(-lookup, kind="stable")[:4])
    if b.peak_memory_rank not in order:
        order.append(b.peak_memory_rank)
    rank_rows = [[str(r), f"{loads.shards[r]:,.0f}", format_seconds(float(lookup[r])),
                  format_bytes(float(memory[r])), "yes" if memory[r] <= b.memory_capacity_bytes else "NO"]
                 for r in order]
    lines.append(table(rank_rows, ["rank", "shards", "lookups", "memory", "fits"]))
    mean = float(lookup.mean())
    if mean > 0:
        lines.append(f"lookup imbalance: busiest / mean = {float(lookup.max()) / mean:.3f}")
    if not b.fits:
        lines += ["", f"warning: rank {b.peak_memory_rank} needs {format_bytes(b.peak_memory_bytes)} of "
                  f"{format_bytes(b.memory_capacity_bytes)} usable (over by "
                  f"{format_bytes(b.peak_memory_bytes - b.memory_capacity_bytes)}): spread its tables over more "
                  "ranks (row_wise, column_wise), or use more devices"]
    return "\n".join(lines)


def recsys_estimate_json(problem: RecsysProblem, plan: ShardingPlan, b: RecsysBreakdown,
                         loads: RankLoads) -> dict[str, Any]:
    return {
        "family": "dlrm",
        "problem": {"model": problem.model.name, "num_tables": problem.model.num_tables,
                    "devices": problem.cluster.num_devices, "device": problem.cluster.device.name,
                    "global_batch_size": problem.task.global_batch_size, "hash": problem.hash},
        "plan": plan.model_dump(mode="json", exclude_none=True),
        "step_time_s": b.step_time_s,
        "samples_per_s": b.samples_per_s,
        "breakdown": {k: getattr(b, k) for k in b.PARTS},
        "phases": {"out_a2a_s": b.out_a2a_s, "ids_a2a_s": b.ids_a2a_s, "sync_s": b.sync_s},
        "memory": {"peak_bytes": b.peak_memory_bytes, "capacity_bytes": b.memory_capacity_bytes,
                   "peak_rank": b.peak_memory_rank, "fits": b.fits, "by_part": b.memory_by_part},
        "ranks": {"lookup_fwd_bytes": loads.lookup_fwd_bytes.tolist(),
                  "lookup_bwd_bytes": loads.lookup_bwd_bytes.tolist(),
                  "embedding_memory_bytes": loads.memory_bytes.tolist(), "shards": loads.shards.tolist()},
    }


def recsys_why_slower(b: RecsysBreakdown, best: RecsysBreakdown, top: int = 2) -> str:
    """The parts of the step that grew most against the best plan."""
    diffs = sorted(((getattr(b, k) - getattr(best, k), k) for k in b.PARTS), reverse=True)
    return ", ".join(f"+{format_seconds(d)} {PART_LABELS[k]}" for d, k in diffs[:top] if d > 0)


def recsys_compare_rows(rows: list[tuple[str, Any]]) -> tuple[str, list[dict]]:
    """rows: (label, SolveResult) of a DLRM problem. Returns the text table and JSON records."""
    feasible = [r for _, r in rows if r.breakdown is not None and r.breakdown.fits]
    best = min(feasible, key=lambda r: r.breakdown.step_time_s) if feasible else None
    lines, records = [], []
    for label, r in rows:
        b = r.breakdown
        gap = (b.step_time_s / best.breakdown.step_time_s - 1) if (b and best) else None
        why = recsys_why_slower(b, best.breakdown) if (b and best and b is not best.breakdown) else ""
        note = r.infeasibility or "; ".join(r.notes)
        records.append({
            "method": label, "status": r.status, "plan": r.plan.summary() if r.plan else None,
            "step_time_s": b.step_time_s if b else None, "samples_per_s": b.samples_per_s if b else None,
            "peak_memory_bytes": b.peak_memory_bytes if b else None, "fits": b.fits if b else None,
            "objective_s": r.objective_s, "best_bound_s": r.best_bound_s, "gap": r.gap,
            "solve_time_s": r.wall_time_s, "gap_to_best": gap, "why": why, "note": note,
        })
        lines.append([
            label, r.status, (r.plan.summary() if r.plan else "-"),
            format_seconds(b.step_time_s) if b else "-",
            f"{b.samples_per_s / 1e6:,.3f} M" if b else "-",
            format_bytes(b.peak_memory_bytes) + ("" if b.fits else " (!)") if b else "-",
            f"{r.wall_time_s:.2f} s",
            f"+{100 * gap:.1f}%" if gap is not None else "-",
            why or (note[:70] if note else ""),
        ])
    text = table(lines, ["method", "status", "plan", "step", "samples/s", "memory", "solve", "vs best", "why"])
    return text, records
