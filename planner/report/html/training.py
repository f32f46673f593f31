"""The HTML report of a training task: what `planner compare` computes, drawn.

Sections: the comparison table; the step-time breakdown of every method as stacked bars (the
parts of planner.llm.cost.breakdown.Breakdown, which sum to the step time); then, for the chosen
plan (the fastest that fits, as `compare`'s "vs best") and every given plan, the pipeline
schedule as a Gantt chart (planner.report.html.schedule) and the memory of every stage against
the device's capacity (planner.llm.cost.memory.StageMemory).
"""

from __future__ import annotations

from typing import Any

from planner.core.units import format_bytes, format_seconds
from planner.llm.cost.breakdown import Breakdown
from planner.llm.plan import Plan
from planner.llm.problem import Problem
from planner.report.html.page import Section, chart_text
from planner.report.html.schedule import Timeline, timeline

GIB = 2.0**30

MAX_GANTT_OPS = 6000
"""Most operations drawn in one Gantt chart; beyond it the middle micro-batches (the steady
state) are left out, and the chart says which and how many operations are drawn."""

MAX_SIMULATED_OPS = 500_000
"""Most operations simulated for one Gantt chart (a few seconds, about 100 MB); a plan with more
gets a note instead of the chart."""

MAX_LABELLED_OPS = 600
"""Up to this many drawn operations, each bar carries its micro-batch number."""

PART_COLORS = {
    "compute": "#4C78A8", "recompute": "#E45756", "tp_exposed": "#F58518", "cp_exposed": "#EECA3B",
    "ep_exposed": "#B279A2", "pp_p2p": "#9D755D", "zero_exposed": "#72B7B2", "bubble": "#BAB0AC",
    "dp_exposed": "#54A24B", "embedding_sync": "#FF9DA6", "optimizer": "#79706E",
}
KIND_COLORS = {"forward": "#4C78A8", "recompute": "#E45756", "backward": "#F58518", "bubble": "#D9D9D9"}
MEMORY_PARTS = (("weights_bytes", "weights", "#4C78A8"), ("grads_bytes", "gradients", "#72B7B2"),
                ("optimizer_bytes", "optimizer", "#54A24B"), ("activations_bytes", "activations", "#F58518"),
                ("transient_bytes", "transient", "#E45756"), ("overhead_bytes", "overhead", "#BAB0AC"))


def _sig(x: float) -> float:
    """Seven significant figures: enough for the charts, a third of the bytes of repr()."""
    return float(f"{x:.7g}")


def unique_labels(labels: list[str]) -> list[str]:
    """Labels made distinct (a category axis would merge equal ones): repeats get ' (2)', ' (3)'."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def breakdown_figure(labels: list[str], breakdowns: list[Breakdown | None], statuses: list[str]) -> dict[str, Any]:
    """Stacked bars: one per method, one colour per part of the step (seconds)."""
    parts = [p for p in Breakdown.PARTS if any(b is not None and b.parts[p] > 0 for b in breakdowns)]
    labels = [chart_text(label) for label in labels]
    data = []
    for part in parts:
        name = part.removesuffix("_s")
        data.append({
            "type": "bar", "name": name, "x": labels,
            "y": [_sig(b.parts[part]) if b is not None else None for b in breakdowns],
            "marker": {"color": PART_COLORS.get(name, "#888888")},
            "hovertemplate": f"%{{x}}<br>{name}: %{{y:.4g}} s<extra></extra>",
        })
    annotations = [
        {"x": label, "y": 0, "yref": "y", "text": status, "showarrow": False, "yanchor": "bottom",
         "font": {"color": "#a00"}}
        for label, b, status in zip(labels, breakdowns, statuses, strict=True) if b is None
    ]
    return {"data": data, "layout": {
        "barmode": "stack", "height": 460, "margin": {"t": 30, "b": 120},
        "xaxis": {"type": "category", "automargin": True},
        "yaxis": {"title": {"text": "step time (s)"}, "rangemode": "tozero"},
        "legend": {"title": {"text": "part"}}, "annotations": annotations,
    }}


def drawn_ops(tl: Timeline, cap: int = MAX_GANTT_OPS) -> tuple[list, list[tuple[int, float, float]], str]:
    """The operations to draw, the span of each stage's left-out operations (stage, start, end)
    and, when some are left out, a note saying which."""
    if len(tl.ops) <= cap:
        return tl.ops, [], ""
    m = tl.num_micro_batches
    keep = max(1, int(cap * m / (2 * len(tl.ops))))
    drawn, spans = [], {}
    for op in tl.ops:
        if op.micro_batch < keep or op.micro_batch >= m - keep:
            drawn.append(op)
        else:
            start, end = spans.get(op.stage, (op.start_s, op.end_s))
            spans[op.stage] = (min(start, op.start_s), max(end, op.end_s))
    note = (f"{len(tl.ops):,} operations; drawn: micro-batches 0-{keep - 1} and {m - keep}-{m - 1} "
            f"({len(drawn):,} operations); micro-batches {keep}-{m - keep - 1} (the steady state) are left out "
            "(hatched)")
    return drawn, [(i, a, b) for i, (a, b) in sorted(spans.items())], note


def gantt_figure(tl: Timeline, step_time_s: float, cap: int = MAX_GANTT_OPS) -> tuple[dict[str, Any], str]:
    """Horizontal bars per stage: forward, recompute, backward of each micro-batch, the bubbles,
    the priced pipeline time and what follows it in the step. Returns the figure and the cap note."""
    ops, left_out, note = drawn_ops(tl, cap)
    stages = [f"stage {i}" for i in range(tl.num_stages)]
    data = []
    if left_out:
        data.append({
            "type": "bar", "orientation": "h", "name": "left out (steady state)",
            "marker": {"color": "#FFFFFF", "line": {"color": "#BBBBBB", "width": 0.5},
                       "pattern": {"shape": "/", "fgcolor": "#BBBBBB", "size": 6}},
            "y": [stages[i] for i, _, _ in left_out], "base": [_sig(a) for _, a, _ in left_out],
            "x": [_sig(b - a) for _, a, b in left_out],
            "hovertemplate": "%{y}: micro-batches not drawn, %{base:.4g} s + %{x:.4g} s<extra></extra>",
        })
    for kind in ("forward", "recompute", "backward"):
        chosen = [op for op in ops if op.kind == kind]
        if not chosen:
            continue
        trace = {
            "type": "bar", "orientation": "h", "name": kind, "marker": {"color": KIND_COLORS[kind]},
            "y": [stages[op.stage] for op in chosen], "base": [_sig(op.start_s) for op in chosen],
            "x": [_sig(op.end_s - op.start_s) for op in chosen],
            "customdata": [[op.micro_batch, op.chunk] for op in chosen],
            "hovertemplate": f"%{{y}}: {kind} of micro-batch %{{customdata[0]}}"
                             + (", chunk %{customdata[1]}" if tl.virtual_stages > 1 else "")
                             + "<br>%{base:.4g} s + %{x:.4g} s<extra></extra>",
        }
        if len(ops) <= MAX_LABELLED_OPS:
            trace.update(text=[str(op.micro_batch) for op in chosen], textposition="inside",
                         insidetextanchor="middle", textfont={"color": "white"})
        data.append(trace)
    hidden = {i: (a, b) for i, a, b in left_out}
    gaps = [(i, a, b) for i in range(tl.num_stages) for a, b in tl.idle(i)
            if not (i in hidden and hidden[i][0] <= a and b <= hidden[i][1])]
    if gaps:
        data.append({
            "type": "bar", "orientation": "h", "name": "bubble (idle)", "marker": {"color": KIND_COLORS["bubble"]},
            "y": [stages[i] for i, _, _ in gaps], "base": [_sig(a) for _, a, _ in gaps],
            "x": [_sig(b - a) for _, a, b in gaps],
            "hovertemplate": "%{y}: idle %{x:.4g} s from %{base:.4g} s<extra></extra>",
        })
    shapes = [{"type": "line", "xref": "x", "yref": "paper", "x0": tl.priced_s, "x1": tl.priced_s, "y0": 0, "y1": 1,
               "line": {"color": "#000", "dash": "dash", "width": 1}}]
    annotations = [{"x": tl.priced_s, "y": 1, "xref": "x", "yref": "paper", "yanchor": "bottom", "xanchor": "right",
                    "showarrow": False, "text": f"priced pipeline time {format_seconds(tl.priced_s)}"}]
    if step_time_s > tl.priced_s * (1 + 1e-9):
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": tl.priced_s, "x1": step_time_s,
                       "y0": 0, "y1": 1, "fillcolor": "#54A24B", "opacity": 0.25, "line": {"width": 0}})
    layout = {
        "barmode": "overlay", "bargap": 0.25, "height": min(1600, 140 + 26 * tl.num_stages),
        "margin": {"t": 50, "b": 50},
        "xaxis": {"title": {"text": "time from the start of the step (s)"}, "range": [0, step_time_s * 1.01]},
        "yaxis": {"type": "category", "categoryorder": "array", "categoryarray": stages, "autorange": "reversed"},
        "shapes": shapes, "annotations": annotations,
        "legend": {"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom"},
    }
    return {"data": data, "layout": layout}, note


def memory_figure(b: Breakdown, hbm_bytes: float) -> dict[str, Any]:
    """Stacked bars of each stage's memory per GPU by kind (GiB), with the usable capacity (HBM
    less the task's headroom) and the device's HBM as lines."""
    stages = [f"stage {s.index}" for s in b.stages]
    data = [{
        "type": "bar", "name": label, "x": stages, "marker": {"color": color},
        "y": [_sig(float(getattr(s.memory, field)) / GIB) for s in b.stages],
        "hovertemplate": f"%{{x}}: {label} %{{y:.2f}} GiB<extra></extra>",
    } for field, label, color in MEMORY_PARTS]
    usable = b.stages[0].capacity_bytes / GIB
    for name, value, dash in (("usable (HBM less headroom)", usable, "dash"), ("HBM", hbm_bytes / GIB, "solid")):
        data.append({"type": "scatter", "mode": "lines", "name": f"{name} {value:.2f} GiB", "x": stages,
                     "y": [_sig(value)] * len(stages), "line": {"color": "#a00", "dash": dash, "width": 2},
                     "hovertemplate": f"{name}: %{{y:.2f}} GiB<extra></extra>"})
    return {"data": data, "layout": {
        "barmode": "stack", "height": 420, "margin": {"t": 30},
        "xaxis": {"type": "category"}, "yaxis": {"title": {"text": "memory per GPU (GiB)"}, "rangemode": "tozero"},
    }}


def stage_recompute_s(problem: Problem, plan: Plan, num_micro_batches: int) -> list[float]:
    """Each stage's recompute seconds of one micro-batch, from the cost model's stage terms."""
    from planner.llm.cost.layout import PlanVars
    from planner.llm.cost.step import assemble, plan_stage_specs

    priced = assemble(problem, PlanVars.from_plan(plan), plan_stage_specs(plan, problem), num_micro_batches)
    return [float(t.recompute_s) for t in priced.terms]


def plan_sections(problem: Problem, label: str, plan: Plan, b: Breakdown) -> list[Section]:
    """The Gantt chart and the memory chart of one priced plan."""
    memory = memory_section(problem, label, b)
    num_ops = 2 * len(b.stages) * b.num_micro_batches * plan.virtual_stages
    if num_ops > MAX_SIMULATED_OPS:
        return [Section(f"Pipeline schedule: {label}", [
            f"{plan.summary()}: {len(b.stages)} stages x {b.num_micro_batches:,} micro-batches"
            + (f" x {plan.virtual_stages} chunks" if plan.virtual_stages > 1 else "")
            + f" are {num_ops:,} operations, more than the {MAX_SIMULATED_OPS:,} this report simulates; "
            "no chart."]), memory]
    tl = timeline(b, stage_recompute_s(problem, plan, b.num_micro_batches), plan.virtual_stages)
    figure, cap_note = gantt_figure(tl, b.step_time_s)
    schedule = "interleaved 1F1B" if plan.virtual_stages > 1 else "1F1B"
    notes = [f"{plan.summary()}: {schedule}, {tl.num_stages} stages x {tl.num_micro_batches} micro-batches"
             + (f" x {tl.virtual_stages} chunks" if tl.virtual_stages > 1 else "")
             + f"; busiest stage {b.critical_stage}."]
    if tl.exact:
        notes.append(f"The timeline ends at the pipeline time the cost model priced, {format_seconds(tl.priced_s)} "
                     "(T = m max t_i + (sum t_i - max t_i) / v, dashed line).")
    else:
        notes.append(f"The cost model prices this pipeline at {format_seconds(tl.priced_s)} (T = m max t_i + "
                     f"(sum t_i - max t_i) / v, dashed line); this timeline, with the same stage times, ends at "
                     f"{format_seconds(tl.makespan_s)} ({100 * (tl.makespan_s / tl.priced_s - 1):+.2f}%): the "
                     "formula is exact for equal stages, and in 1F1B when the slowest stage is the last.")
    if b.step_time_s > tl.priced_s * (1 + 1e-9):
        notes.append(f"Green band: what follows the pipeline in the step (data-parallel gradient sync and "
                     f"parameter gather left exposed, tied-embedding sync, optimizer), "
                     f"{format_seconds(b.step_time_s - tl.priced_s)}; the step ends at {format_seconds(b.step_time_s)}.")
    if cap_note:
        notes.append(cap_note + ".")
    return [Section(f"Pipeline schedule: {label}", notes, figure, chart_name=f"gantt:{label}"), memory]


def memory_section(problem: Problem, label: str, b: Breakdown) -> Section:
    """Memory per stage against the device: the chart and what it says."""
    over = [s for s in b.stages if not s.fits]
    notes = [(f"Peak {format_bytes(b.peak_memory_bytes)} per GPU; usable {format_bytes(b.stages[0].capacity_bytes)} "
              "of the device's HBM (the task's memory_headroom is kept free).")]
    if over:
        worst = max(over, key=lambda s: s.memory_bytes - s.capacity_bytes)
        notes.append(f"{len(over)} stage(s) do not fit: stage {worst.index} is over by "
                     f"{format_bytes(worst.memory_bytes - worst.capacity_bytes)}.")
    return Section(f"Memory per stage: {label}", notes, memory_figure(b, problem.cluster.device.hbm_bytes),
                   chart_name=f"memory:{label}")


def training_sections(problem: Problem, rows: list[tuple[str, Any]], given: set[str]) -> list[Section]:
    """Every section of a training report; `rows` are compare's (label, SolveResult), `given`
    the labels of plans the user gave (each drawn in detail beside the chosen one)."""
    from planner.report.solve import compare_rows

    _, records = compare_rows(rows)
    labels = unique_labels([label for label, _ in rows])
    table = []
    for label, rec in zip(labels, records, strict=True):
        table.append([
            label, rec["status"], rec["plan"] or "-",
            format_seconds(rec["step_time_s"]) if rec["step_time_s"] is not None else "-",
            f"{100 * rec['mfu']:.1f}%" if rec["mfu"] is not None else "-",
            (format_bytes(rec["peak_memory_bytes"]) + ("" if rec["fits"] else " (does not fit)"))
            if rec["peak_memory_bytes"] is not None else "-",
            f"{rec['solve_time_s']:.2f} s",
            f"{100 * rec['gap_to_best']:+.1f}%" if rec["gap_to_best"] is not None else "-",
            rec["why"] or rec["note"] or "",
        ])
    breakdowns = [r.breakdown for _, r in rows]
    sections = [
        Section("Methods compared", [("As `planner compare` prints them: the search, the rules of thumb and the "
                                      "given plans, priced by the same cost model.")],
                table_header=["method", "status", "plan", "step", "MFU", "memory", "solve", "vs best", "why / note"],
                table_rows=table),
        Section("Where the step time goes", [("Each bar is one method's step, split into the cost model's parts "
                                              "(they sum to the step time; the communication parts are what is "
                                              "left exposed after overlap).")],
                breakdown_figure(labels, breakdowns, [r.status for _, r in rows]), chart_name="breakdown"),
    ]
    priced = [(label, r) for label, (_, r) in zip(labels, rows, strict=True) if r.breakdown is not None]
    fitting = [(label, r) for label, r in priced if r.breakdown.fits]
    detail: list[tuple[str, Any]] = []
    # The highest throughput, as compare's "vs best" (the shortest step when every plan runs the
    # same batch; where the task's batch is a range, plans may run different batches).
    if fitting:
        detail.append(max(fitting, key=lambda lr: lr[1].breakdown.tokens_per_s))
    elif priced:
        detail.append(max(priced, key=lambda lr: lr[1].breakdown.tokens_per_s))
        sections.append(Section("No plan fits", [("No method found a plan that fits in memory; the fastest priced "
                                                  "plan is drawn below.")]))
    detail += [(label, r) for label, (original, r) in zip(labels, rows, strict=True)
               if original in given and r.breakdown is not None and all(label != d for d, _ in detail)]
    for label, r in detail:
        sections += plan_sections(problem, label, r.plan, r.breakdown)
    return sections
