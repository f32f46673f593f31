"""The HTML report of a sweep result (`planner sweep --json` or `-o`): the scenarios' time, cost
and energy, and their Pareto front.

The document is read strictly (planner.core.files.read_json: UTF-8, no NaN, no duplicate keys)
and checked field by field; fields this report does not draw are ignored, so that the sweep's
output may grow without breaking its report. Which scenarios are on the front is the sweep's
`pareto` flag, not recomputed here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.core.errors import InputError
from planner.core.schema import Name
from planner.report.html.page import Section, chart_text

Number = Annotated[float, Field(ge=0, le=1e30)]

FRONT_COLOR, OTHER_COLOR = "#E45756", "#9BB5D1"
MAX_TABLE_ROWS = 200
"""Scenarios listed in the table (all are drawn); the rest are counted."""


class _Read(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, allow_inf_nan=False)


class ScenarioResult(_Read):
    """One scenario of a sweep result; the metrics are null when it has no plan."""

    name: Name
    axes: dict[str, Any] = Field(default_factory=dict)
    status: Annotated[str, Field(max_length=40)]
    step_time_s: Number | None = None
    tokens_per_s: Number | None = None
    usd_per_mtok: Number | None = None
    kwh_per_mtok: Number | None = None
    gap: Number | None = None
    plan: Annotated[str, Field(max_length=1000)] | None = None
    pareto: bool = False


class SweepResult(_Read):
    kind: Literal["sweep"]
    objectives: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list)
    description: Annotated[str, Field(max_length=10_000)] | None = None
    scenarios: Annotated[list[ScenarioResult], Field(max_length=1_000_000)]


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def is_sweep_document(data: Any) -> bool:
    """Whether a JSON document read from the command line is a result (it has a `kind`), not a task."""
    return isinstance(data, dict) and "kind" in data


def parse_sweep(data: Any, source: str) -> SweepResult:
    """The checked sweep result; InputError naming the file and the first bad field otherwise."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: a sweep result is a JSON object (from `planner sweep --json`)")
    if data.get("kind") != "sweep":
        raise InputError(f"{source}: kind: {str(data.get('kind'))[:40]!r} is not a result this report reads "
                         "(expected 'sweep', from `planner sweep --json`)")
    try:
        return SweepResult.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = len(exc.errors()) - 1
        raise InputError(f"{source}: {_field_path(first['loc'])}: {first['msg']}"
                         + (f" (and {more} more)" if more else "")) from None


def _axes_text(axes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in axes.items())[:200]


def _scatter(points: list[ScenarioResult], x: str, y: str, color: str, name: str) -> dict[str, Any]:
    return {
        "type": "scatter", "mode": "markers", "name": name,
        "x": [getattr(s, x) for s in points], "y": [getattr(s, y) for s in points],
        "text": [chart_text(s.name) for s in points],
        "customdata": [[s.step_time_s, s.usd_per_mtok, s.kwh_per_mtok, chart_text(_axes_text(s.axes)),
                        chart_text(s.plan or "")]
                       for s in points],
        "marker": {"color": color, "size": 10 if color == FRONT_COLOR else 7, "line": {"width": 0}},
        "hovertemplate": "%{text}<br>step %{customdata[0]:.4g} s, $%{customdata[1]:.4g} and %{customdata[2]:.4g} "
                         "kWh per 1M tokens<br>%{customdata[3]}<br>%{customdata[4]}<extra></extra>",
    }


def pareto_figure(result: SweepResult) -> dict[str, Any]:
    """Two panels sharing the time axis: $ per 1M tokens and kWh per 1M tokens against step time;
    the Pareto front (on all three objectives) in red, the other scenarios with a plan in blue."""
    solved = [s for s in result.scenarios if s.step_time_s is not None and s.usd_per_mtok is not None
              and s.kwh_per_mtok is not None]
    front = [s for s in solved if s.pareto]
    rest = [s for s in solved if not s.pareto]
    data = []
    for panel, metric in ((1, "usd_per_mtok"), (2, "kwh_per_mtok")):
        for group, color, name in ((rest, OTHER_COLOR, "other scenarios"), (front, FRONT_COLOR, "Pareto front")):
            trace = _scatter(group, "step_time_s", metric, color, name)
            trace.update(xaxis=f"x{panel if panel > 1 else ''}", yaxis=f"y{panel if panel > 1 else ''}",
                         legendgroup=name, showlegend=panel == 1)
            data.append(trace)
    layout = {
        "height": 480, "margin": {"t": 40},
        "grid": {"rows": 1, "columns": 2, "pattern": "independent"},
        "xaxis": {"title": {"text": "step time (s)"}, "type": "log"},
        "xaxis2": {"title": {"text": "step time (s)"}, "type": "log"},
        "yaxis": {"title": {"text": "$ per 1M tokens"}},
        "yaxis2": {"title": {"text": "kWh per 1M tokens"}},
        "legend": {"orientation": "h", "y": 1.1},
    }
    return {"data": data, "layout": layout}


def sweep_sections(result: SweepResult) -> list[Section]:
    """The Pareto chart, then the front and every scenario as tables."""
    solved = [s for s in result.scenarios if s.step_time_s is not None]
    front = sorted((s for s in result.scenarios if s.pareto), key=lambda s: s.step_time_s or 0.0)
    priced = [s for s in solved if s.usd_per_mtok is not None and s.kwh_per_mtok is not None]
    notes = [(f"{len(result.scenarios)} scenarios, {len(solved)} with a plan, {len(front)} on the Pareto front "
              f"(objectives: {', '.join(result.objectives) or 'not stated'}; each minimised). A scenario is on the "
              "front when no other is at least as good on every objective and better on one; each panel shows two "
              "of the three, so a red point may look beaten in one panel and win in the other or on the third.")]
    if len(priced) < len(solved):
        notes.append(f"{len(solved) - len(priced)} scenario(s) with a plan have no price or power and are not drawn.")
    header = ["scenario", "axes", "status", "step", "tokens/s", "$/Mtok", "kWh/Mtok", "gap", "front", "plan"]

    def row(s: ScenarioResult) -> list[str]:
        return [s.name, _axes_text(s.axes), s.status,
                "-" if s.step_time_s is None else f"{s.step_time_s:.4g} s",
                "-" if s.tokens_per_s is None else f"{s.tokens_per_s:,.0f}",
                "-" if s.usd_per_mtok is None else f"{s.usd_per_mtok:.4g}",
                "-" if s.kwh_per_mtok is None else f"{s.kwh_per_mtok:.4g}",
                "-" if s.gap is None else f"{100 * s.gap:.2f}%", "yes" if s.pareto else "", s.plan or ""]

    everything = [row(s) for s in result.scenarios[:MAX_TABLE_ROWS]]
    if len(result.scenarios) > MAX_TABLE_ROWS:
        everything.append([f"... and {len(result.scenarios) - MAX_TABLE_ROWS:,} more"] + [""] * (len(header) - 1))
    return [
        Section("Time, cost and energy: the Pareto front", notes, pareto_figure(result), chart_name="pareto"),
        Section("The front, fastest first", [], table_header=header, table_rows=[row(s) for s in front]),
        Section("Every scenario", [], table_header=header, table_rows=everything),
    ]
