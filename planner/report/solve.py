"""Rendering of solver results: the proof line, the comparison table and why plans lose."""

from __future__ import annotations

from typing import Any

from planner.llm.cost.breakdown import Breakdown
from planner.report.estimate import table
from planner.core.units import format_bytes, format_seconds


def proof_line(result) -> str:
    parts = [f"solver {result.solver}: {result.status}"]
    per = result.stats.get("reference_batch") if result.stats else None
    suffix = f" per {per} sequences" if per else ""  # a free batch: time per reference batch
    if result.objective_s is not None:
        parts.append(f"objective {format_seconds(result.objective_s)}{suffix}")
    if result.best_bound_s is not None:
        parts.append(f"best bound {format_seconds(result.best_bound_s)}")
    if result.gap is not None:
        parts.append(f"gap {100 * result.gap:.2f}%")
    parts.append(f"wall {result.wall_time_s:.2f} s")
    return ", ".join(parts)


def stats_line(result) -> str:
    keys = ("configurations", "duplicates_removed", "pruned_by_time_bound", "pruned_by_memory_bound",
            "rounds", "partitions", "rounding_bound_s")
    shown = [f"{k.replace('_', ' ')} {result.stats[k]:.3g}" if isinstance(result.stats.get(k), float)
             else f"{k.replace('_', ' ')} {result.stats[k]}" for k in keys if k in result.stats]
    return "search: " + ", ".join(shown) if shown else ""


def why_slower(b: Breakdown, best: Breakdown, top: int = 2) -> str:
    """The parts of the step that grew most against the best plan. Plans at different global
    batches (a task whose batch is a range) are compared per token: `b`'s parts are scaled to
    the best plan's tokens per step (a factor of exactly 1 for the same batch)."""
    scale = best.model_flops_per_step / b.model_flops_per_step if b.model_flops_per_step else 1.0
    diffs = sorted(((b.parts[k] * scale - best.parts[k], k) for k in b.parts), reverse=True)
    noise = 1e-9 * best.step_time_s  # rounding of the scaling, not a part that grew
    items = [f"+{format_seconds(d)} {k.removesuffix('_s')}" for d, k in diffs[:top] if d > noise]
    return ", ".join(items)


def compare_rows(rows: list[tuple[str, Any]]) -> tuple[str, list[dict]]:
    """rows: (label, SolveResult). Returns the text table and JSON records."""
    feasible = [r for _, r in rows if r.breakdown is not None and r.breakdown.fits]
    # Highest throughput (the shortest step when every plan runs the same batch; a task whose
    # batch is free may compare plans at different batches).
    best = max(feasible, key=lambda r: r.breakdown.tokens_per_s) if feasible else None
    lines, records = [], []
    for label, r in rows:
        b = r.breakdown
        record = {
            "method": label,
            "status": r.status,
            "plan": r.plan.summary() if r.plan else None,
            "step_time_s": b.step_time_s if b else None,
            "tokens_per_s": b.tokens_per_s if b else None,
            "global_batch_size": r.plan.global_batch_size if r.plan else None,
            "mfu": b.mfu if b else None,
            "peak_memory_bytes": b.peak_memory_bytes if b else None,
            "fits": b.fits if b else None,
            "solve_time_s": r.wall_time_s,
            "gap_to_best": (best.breakdown.tokens_per_s / b.tokens_per_s - 1) if (b and best) else None,
            "why": why_slower(b, best.breakdown) if (b and best and b is not best.breakdown) else "",
            "note": r.infeasibility or "; ".join(r.notes),
        }
        records.append(record)
        lines.append([
            label,
            r.status,
            record["plan"] or "-",
            format_seconds(b.step_time_s) if b else "-",
            f"{100 * b.mfu:.1f}%" if b else "-",
            format_bytes(b.peak_memory_bytes) + ("" if b.fits else " (!)") if b else "-",
            f"{r.wall_time_s:.2f} s",
            f"{100 * record['gap_to_best']:+.1f}%" if record["gap_to_best"] is not None else "-",
            record["why"] or (record["note"][:60] if record["note"] else ""),
        ])
    text = table(lines, ["method", "status", "plan", "step", "MFU", "memory", "solve", "vs best", "why"])
    return text, records
