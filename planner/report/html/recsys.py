"""The HTML report of a DLRM task: what `planner compare` computes for an embedding-sharding
problem, drawn, and the chosen plan's load on every rank.

Sections: the comparison table; the step-time breakdown of every method as stacked bars (the
parts of planner.recsys.cost.RecsysBreakdown, which sum to the step time); for the fastest plan
that fits, the embedding lookup bytes of every rank (forward, and backward with the fused
optimizer) and every rank's memory against the usable capacity (planner.recsys.loads.RankLoads).
"""

from __future__ import annotations

from typing import Any

from planner.core.units import format_bytes, format_seconds
from planner.report.html.page import Section, chart_text
from planner.report.html.training import unique_labels
from planner.report.recsys import PART_LABELS

GIB = 2.0**30
COLORS = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#EECA3B", "#B279A2", "#FF9DA6", "#9D755D",
          "#BAB0AC", "#79706E")


def breakdown_figure(labels: list[str], breakdowns: list, statuses: list[str]) -> dict[str, Any]:
    """Stacked bars: one per method, one colour per part of the DLRM step (milliseconds)."""
    from planner.recsys.cost import RecsysBreakdown

    labels = [chart_text(label) for label in labels]
    parts = [p for p in RecsysBreakdown.PARTS if any(b is not None and getattr(b, p) > 0 for b in breakdowns)]
    data = [{
        "type": "bar", "name": PART_LABELS[part], "x": labels, "marker": {"color": COLORS[k % len(COLORS)]},
        "y": [float(f"{getattr(b, part) * 1e3:.7g}") if b is not None else None for b in breakdowns],
        "hovertemplate": f"%{{x}}<br>{PART_LABELS[part]}: %{{y:.4g}} ms<extra></extra>",
    } for k, part in enumerate(parts)]
    annotations = [{"x": label, "y": 0, "text": status, "showarrow": False, "yanchor": "bottom",
                    "font": {"color": "#a00"}}
                   for label, b, status in zip(labels, breakdowns, statuses, strict=True) if b is None]
    return {"data": data, "layout": {
        "barmode": "stack", "height": 460, "margin": {"t": 30, "b": 120}, "xaxis": {"type": "category"},
        "yaxis": {"title": {"text": "step time (ms)"}, "rangemode": "tozero"}, "annotations": annotations,
    }}


def rank_figures(b, loads) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per rank: lookup bytes (forward; backward with the fused optimizer) and memory (the
    embedding shards with their optimizer state and buffers, plus what every rank holds besides:
    the peak rank's dense part, activations and overhead, as `planner estimate` counts it)."""
    ranks = [str(r) for r in range(len(loads.memory_bytes))]
    lookups = {"type": "bar", "x": ranks}
    data = [dict(lookups, name="lookups forward", y=[float(f"{x / GIB:.7g}") for x in loads.lookup_fwd_bytes],
                 marker={"color": "#4C78A8"}, hovertemplate="rank %{x}: forward %{y:.4g} GiB<extra></extra>"),
            dict(lookups, name="lookups backward + optimizer", y=[float(f"{x / GIB:.7g}") for x in loads.lookup_bwd_bytes],
                 marker={"color": "#F58518"}, hovertemplate="rank %{x}: backward %{y:.4g} GiB<extra></extra>")]
    lookup = {"data": data, "layout": {
        "barmode": "stack", "height": 380, "margin": {"t": 30}, "xaxis": {"title": {"text": "rank"}, "type": "category"},
        "yaxis": {"title": {"text": "HBM bytes read and written per step (GiB)"}, "rangemode": "tozero"}}}
    rest = b.peak_memory_bytes - float(loads.memory_bytes[b.peak_memory_rank])
    memory = {"data": [
        dict(lookups, name="embedding shards", y=[float(f"{x / GIB:.7g}") for x in loads.memory_bytes],
             marker={"color": "#54A24B"}, hovertemplate="rank %{x}: embeddings %{y:.4g} GiB<extra></extra>"),
        dict(lookups, name="dense, activations, other", y=[float(f"{rest / GIB:.7g}")] * len(ranks),
             marker={"color": "#BAB0AC"}, hovertemplate="rank %{x}: the rest %{y:.4g} GiB<extra></extra>"),
        {"type": "scatter", "mode": "lines", "name": f"usable {b.memory_capacity_bytes / GIB:.2f} GiB", "x": ranks,
         "y": [float(f"{b.memory_capacity_bytes / GIB:.7g}")] * len(ranks), "line": {"color": "#a00", "dash": "dash"},
         "hovertemplate": "usable %{y:.2f} GiB<extra></extra>"},
    ], "layout": {
        "barmode": "stack", "height": 380, "margin": {"t": 30}, "xaxis": {"title": {"text": "rank"}, "type": "category"},
        "yaxis": {"title": {"text": "memory per GPU (GiB)"}, "rangemode": "tozero"}}}
    return lookup, memory


def recsys_sections(problem, rows: list[tuple[str, Any]]) -> list[Section]:
    """Every section of a DLRM report; `rows` are compare's (label, SolveResult)."""
    from planner.recsys.loads import plan_loads
    from planner.report.recsys import recsys_compare_rows

    _, records = recsys_compare_rows(rows)
    labels = unique_labels([label for label, _ in rows])
    table = [[label, rec["status"], rec["plan"] or "-",
              format_seconds(rec["step_time_s"]) if rec["step_time_s"] is not None else "-",
              f"{rec['samples_per_s'] / 1e6:,.3f} M" if rec["samples_per_s"] is not None else "-",
              (format_bytes(rec["peak_memory_bytes"]) + ("" if rec["fits"] else " (does not fit)"))
              if rec["peak_memory_bytes"] is not None else "-",
              f"{rec['solve_time_s']:.2f} s",
              f"+{100 * rec['gap_to_best']:.1f}%" if rec["gap_to_best"] is not None else "-",
              rec["why"] or rec["note"] or ""] for label, rec in zip(labels, records, strict=True)]
    sections = [
        Section("Methods compared", ["As `planner compare` prints them, priced by the same cost model."],
                table_header=["method", "status", "plan", "step", "samples/s", "memory", "solve", "vs best",
                              "why / note"], table_rows=table),
        Section("Where the step time goes", [("Each bar is one method's step, split into the cost model's parts "
                                              "(they sum to the step time).")],
                breakdown_figure(labels, [r.breakdown for _, r in rows], [r.status for _, r in rows]),
                chart_name="breakdown"),
    ]
    priced = [(label, r) for label, (_, r) in zip(labels, rows, strict=True) if r.breakdown is not None]
    fitting = [(label, r) for label, r in priced if r.breakdown.fits] or priced
    if not fitting:
        return sections
    label, r = min(fitting, key=lambda lr: lr[1].breakdown.step_time_s)
    b = r.breakdown
    loads = plan_loads(problem, r.plan)
    lookup, memory = rank_figures(b, loads)
    mean = float((loads.lookup_fwd_bytes + loads.lookup_bwd_bytes).mean())
    busiest = float((loads.lookup_fwd_bytes + loads.lookup_bwd_bytes).max())
    notes = [f"{r.plan.summary()}: busiest lookup rank {b.busiest_lookup_rank}"
             + (f", busiest / mean lookup bytes {busiest / mean:.3f}" if mean > 0 else "")
             + "; the slowest rank sets the pace of the lookups."]
    if not b.fits:
        notes.append(f"Rank {b.peak_memory_rank} does not fit: {format_bytes(b.peak_memory_bytes)} of "
                     f"{format_bytes(b.memory_capacity_bytes)} usable.")
    return sections + [
        Section(f"Embedding lookups per rank: {label}", notes, lookup, chart_name=f"lookups:{label}"),
        Section(f"Memory per rank: {label}", [(f"Peak {format_bytes(b.peak_memory_bytes)} on rank "
                                               f"{b.peak_memory_rank}.")], memory, chart_name=f"memory:{label}"),
    ]
