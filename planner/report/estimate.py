"""Plain-text and JSON renderings of a priced plan."""

from __future__ import annotations

from typing import Any

from planner.llm.cost.breakdown import Breakdown
from planner.llm.plan import Plan
from planner.llm.problem import Problem
from planner.core.units import format_bytes, format_seconds

HEADROOM_WARNING = 0.05


def table(rows: list[list[str]], header: list[str]) -> str:
    """A left/right-aligned text table (numbers right-aligned)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            text = str(cell)
            numeric = text[:1].isdigit() or text[:1] in "+-."
            out.append(text.rjust(widths[i]) if numeric and i else text.ljust(widths[i]))
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def warnings_for(breakdown: Breakdown, problem: Problem) -> list[str]:
    notes = []
    capacity = problem.cluster.device.hbm_bytes
    for stage in breakdown.stages:
        used = stage.memory_bytes
        if not stage.fits:
            notes.append(
                f"stage {stage.index} needs {format_bytes(used)} of {format_bytes(stage.capacity_bytes)} usable "
                f"(over by {format_bytes(used - stage.capacity_bytes)}): try more pipeline stages, ZeRO, "
                "full recompute or a smaller micro-batch"
            )
        elif 1 - used / capacity < HEADROOM_WARNING:
            notes.append(f"stage {stage.index}: memory headroom {100 * (1 - used / capacity):.1f}% < 5%")
    if breakdown.bubble_s > 0.2 * breakdown.step_time_s:
        notes.append(
            f"pipeline bubble is {100 * breakdown.bubble_s / breakdown.step_time_s:.0f}% of the step: "
            "more micro-batches or interleaving would shrink it"
        )
    return notes


def _profile_text(task) -> str:
    """The framework profile the estimate follows, with its options (planner/llm/frameworks.py)."""
    framework = task.framework
    options = ", ".join(f"{k} {v}" for k, v in sorted(framework.options.items())) if framework.options else ""
    return f"framework profile {framework.profile}" + (f" ({options})" if options else "")


def render_estimate(problem: Problem, plan: Plan, b: Breakdown) -> str:
    cluster, task = problem.cluster, problem.task
    lines = [
        f"problem  {problem.model.name} on {cluster.num_devices} x {cluster.device.name} "
        f"({cluster.name}); {plan.sequences(task)} x {task.seq_len} tokens/step, {task.precision}",
        f"plan     {plan.summary()}  ({b.num_micro_batches} micro-batches, axis order {'-'.join(plan.axis_order)})",
        f"priced as {_profile_text(task)}",
        "",
        f"step time      {format_seconds(b.step_time_s)}",
        f"throughput     {b.tokens_per_s:,.0f} tokens/s  ({b.tokens_per_s_per_gpu:,.1f} per GPU)",
        f"MFU / HFU      {100 * b.mfu:.1f}% / {100 * b.hfu:.1f}%  (of dense {'fp16' if task.precision == 'fp16' else 'bf16'} peak)",
        f"peak memory    {format_bytes(b.peak_memory_bytes)} per GPU of {format_bytes(cluster.device.hbm_bytes)}",
        "",
        "where the step time goes (critical stage %d)" % b.critical_stage,
    ]
    rows = []
    for name, value in b.parts.items():
        if value > 0:
            rows.append([name.removesuffix("_s"), format_seconds(value), f"{100 * value / b.step_time_s:.1f}%"])
    rows.append(["total", format_seconds(b.step_time_s), "100.0%"])
    lines.append(table(rows, ["part", "time", "share"]))
    if b.exposed_by_axis_tier:
        lines += ["", "exposed communication by axis and tier"]
        rows = [
            [axis, tier, format_seconds(t)] for axis, tiers in b.exposed_by_axis_tier.items() for tier, t in tiers.items()
        ]
        lines.append(table(rows, ["axis", "tier", "time"]))
    lines += ["", "memory per GPU by pipeline stage"]
    rows = []
    for s in b.stages:
        m = s.memory
        edge = ("emb" if s.has_embedding else "") + ("+head" if s.has_head else "")
        edge += f"+mtp{s.mtp_layers}" if s.mtp_layers else ""
        rows.append(
            [
                str(s.index),
                f"{s.layers}" + (f" ({s.moe_layers} moe)" if problem.model.family == "moe" else "")
                + (f" ({s.recomputed_layers} rc)" if s.recomputed_layers else ""),
                edge.strip("+") or "-",
                format_bytes(m.weights_bytes),
                format_bytes(m.grads_bytes),
                format_bytes(m.optimizer_bytes),
                format_bytes(m.activations_bytes),
                format_bytes(m.transient_bytes + m.overhead_bytes),
                format_bytes(s.memory_bytes),
                "yes" if s.fits else "NO",
            ]
        )
    shown = rows if len(rows) <= 12 else rows[:6] + [["..."] + [""] * 9] + rows[-5:]
    lines.append(
        table(shown, ["stage", "layers", "edge", "weights", "grads", "optim", "activ", "other", "total", "fits"])
    )
    notes = warnings_for(b, problem)
    if notes:
        lines += ["", "warnings"] + [f"  - {n}" for n in notes]
    return "\n".join(lines)


def estimate_json(problem: Problem, plan: Plan, b: Breakdown) -> dict[str, Any]:
    return {
        "problem_hash": problem.hash,
        "plan": plan.model_dump(mode="json"),
        "framework_profile": {"profile": problem.task.framework.profile,
                              "options": dict(problem.task.framework.options or {})},
        "step_time_s": b.step_time_s,
        "parts_s": b.parts,
        "exposed_by_axis_tier_s": b.exposed_by_axis_tier,
        "tokens_per_s": b.tokens_per_s,
        "tokens_per_s_per_gpu": b.tokens_per_s_per_gpu,
        "mfu": b.mfu,
        "hfu": b.hfu,
        "num_micro_batches": b.num_micro_batches,
        "critical_stage": b.critical_stage,
        "peak_memory_bytes": b.peak_memory_bytes,
        "fits": b.fits,
        "stages": [
            {
                "index": s.index,
                "layers": s.layers,
                "moe_layers": s.moe_layers,
                "mtp_layers": s.mtp_layers,
                "recomputed_layers": s.recomputed_layers,
                "forward_s": s.forward_s,
                "backward_s": s.backward_s,
                "memory_bytes": {k: getattr(s.memory, k) for k in s.memory.__dataclass_fields__}
                | {"total_bytes": s.memory_bytes, "capacity_bytes": s.capacity_bytes},
                "fits": s.fits,
            }
            for s in b.stages
        ],
        "warnings": warnings_for(b, problem),
    }
