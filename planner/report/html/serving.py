"""The HTML report of an inference task: the serving search's Pareto front of output tokens/s per
GPU against TPOT (what `planner solve --pareto` prints), the chosen deployment marked, and the
latency targets.

The front is over the configurations that fit in memory and meet the TTFT target, the TPOT
target ignored (solvers.serving.solve_serving); the chosen deployment is the fastest per GPU that
meets both targets.
"""

from __future__ import annotations

from typing import Any

from planner.core.units import format_seconds
from planner.report.html.page import Section, chart_text

FRONT_COLOR, CHOSEN_COLOR = "#4C78A8", "#E45756"


def _point(priced) -> list:
    e = priced.estimate
    return [chart_text(priced.plan.summary()), e.batch_per_replica, e.ttft_max_s * 1e3]


def pareto_figure(front: list, chosen, tpot_target_s: float | None) -> dict[str, Any]:
    """Output tokens/s per GPU (y) against TPOT in ms (x): the front as a line of points, the
    chosen deployment as a star, the TPOT target as a dashed line."""
    hover = ("%{customdata[0]}<br>batch %{customdata[1]} per replica<br>TPOT %{x:.4g} ms, TTFT %{customdata[2]:.4g} "
             "ms<br>%{y:,.1f} output tokens/s per GPU<extra></extra>")
    data = [{
        "type": "scatter", "mode": "lines+markers", "name": "Pareto front", "line": {"shape": "hv", "width": 1},
        "x": [p.estimate.tpot_s * 1e3 for p in front], "y": [p.estimate.output_tokens_per_s_per_gpu for p in front],
        "customdata": [_point(p) for p in front], "marker": {"color": FRONT_COLOR, "size": 8},
        "hovertemplate": hover,
    }]
    if chosen is not None:
        data.append({
            "type": "scatter", "mode": "markers", "name": "chosen (meets the targets)",
            "x": [chosen.estimate.tpot_s * 1e3], "y": [chosen.estimate.output_tokens_per_s_per_gpu],
            "customdata": [_point(chosen)], "marker": {"color": CHOSEN_COLOR, "size": 16, "symbol": "star"},
            "hovertemplate": hover,
        })
    shapes, annotations = [], []
    if tpot_target_s is not None:
        x = tpot_target_s * 1e3
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1,
                       "line": {"color": "#a00", "dash": "dash", "width": 1}})
        annotations.append({"x": x, "y": 1, "xref": "x", "yref": "paper", "yanchor": "bottom", "showarrow": False,
                            "text": f"TPOT target {format_seconds(tpot_target_s)}"})
    return {"data": data, "layout": {
        "height": 460, "margin": {"t": 40},
        "xaxis": {"title": {"text": "time per output token (ms)"}, "rangemode": "tozero"},
        "yaxis": {"title": {"text": "output tokens/s per GPU"}, "rangemode": "tozero"},
        "shapes": shapes, "annotations": annotations, "legend": {"orientation": "h", "y": -0.2},
    }}


def serving_sections(problem, result) -> list[Section]:
    """The front chart and table of a serving search `result` (solvers.serving.ServingSolveResult)."""
    targets = problem.task.targets
    front, chosen = result.pareto, result.best
    notes = [f"The serving search: {result.status}"
             + (f", {result.objective_tokens_per_s_per_gpu:,.1f} output tokens/s per GPU"
                if result.objective_tokens_per_s_per_gpu is not None else "")
             + f"; {result.evaluated:,} of {result.space_size:,} configurations priced, the rest bounded."]
    notes.append(f"{len(front)} configurations on the front: those that fit"
                 + (f" and meet the {format_seconds(targets.ttft_s)} TTFT target" if targets.ttft_s else "")
                 + " and that no other beats on both throughput per GPU and TPOT (the TPOT target ignored).")
    notes += list(result.notes)
    if result.infeasibility:
        notes.append(f"No deployment meets the targets: {result.infeasibility}")
    rows = [[p.plan.summary(), f"{p.estimate.batch_per_replica:,}", format_seconds(p.estimate.tpot_s),
             format_seconds(p.estimate.ttft_max_s), f"{p.estimate.output_tokens_per_s_per_gpu:,.1f}",
             "-" if targets.tpot_s is None else ("yes" if p.estimate.tpot_s <= targets.tpot_s else "no"),
             "chosen" if chosen is not None and p.plan == chosen.plan else ""] for p in front]
    return [
        Section("Throughput against latency: the Pareto front", notes,
                pareto_figure(front, chosen, targets.tpot_s), chart_name="serving-pareto",
                table_header=["plan", "seqs/replica", "TPOT", "TTFT", "tok/s/GPU", "meets TPOT", ""],
                table_rows=rows),
    ]
