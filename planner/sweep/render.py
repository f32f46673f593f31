"""A sweep's results as a terminal table and as the JSON document `planner report` reads."""

from __future__ import annotations

from typing import Any

from planner.sweep.pricing import DeviceCosts
from planner.sweep.run import OBJECTIVES, Row
from planner.sweep.spec import Sweep

SCHEMA_VERSION = 1


def sweep_json(sweep: Sweep, rows: list[Row], costs: DeviceCosts, options: dict[str, Any],
               wall_s: float, interrupted: bool) -> dict[str, Any]:
    """The machine-readable document (schema in README, "planner sweep")."""
    providers = sorted({r.scenario.provider for r in rows})
    return {
        "kind": "sweep",
        "schema_version": SCHEMA_VERSION,
        "sweep_file": sweep.source,
        "description": sweep.spec.description,
        "base_task": sweep.base.source,
        "objectives": list(OBJECTIVES),
        "senses": {name: "min" for name in OBJECTIVES},
        "axes": [name for name in rows[0].scenario.axes] if rows else [],
        "num_scenarios": len(rows),
        "num_pareto": sum(r.pareto for r in rows),
        "solver": "cpsat",
        "options": options,
        "wall_time_s": wall_s,
        "interrupted": interrupted,
        "energy_model": "num_gpus x board_power_w x step_time_s (GPUs at maximum board power for the whole step; "
                        "host, network and cooling not counted)",
        "price_lists": [
            {"provider": p.provider, "kind": p.kind, "read_on": p.read_on, "source": p.source,
             "usd_per_gpu_hour": dict(p.usd_per_gpu_hour)}
            for p in costs.providers if p.provider in providers
        ],
        "scenarios": [r.as_json() for r in rows],
    }


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} s" if value >= 1 else f"{value * 1e3:.1f} ms"


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render_table(sweep: Sweep, rows: list[Row], wall_s: float) -> str:
    """One line per scenario (axes, status, plan, step time, tokens/s, $ and kWh per 1M tokens,
    `*` on the Pareto front), then the front sorted by step time."""
    axes = list(rows[0].scenario.axes) if rows else []
    header = [*axes, "status", "plan", "step", "tokens/s", "gap", "$/Mtok", "kWh/Mtok", "front"]
    body = []
    for r in rows:
        cells = [_axis_text(r.scenario.axes[a]) for a in axes]
        cells += [r.status, r.plan or _short(r.reason), _seconds(r.step_time_s), _number(r.tokens_per_s, ",.0f"),
                  "-" if r.gap is None else f"{100 * r.gap:.2f}%", _number(r.usd_per_mtok, ".3f"),
                  _number(r.kwh_per_mtok, ".3f"), "*" if r.pareto else ""]
        body.append(cells)
    right = {"step", "tokens/s", "gap", "$/Mtok", "kWh/Mtok"}
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, header)).rstrip()

    solved = sum(r.step_time_s is not None for r in rows)
    front = sorted((r for r in rows if r.pareto), key=lambda r: r.step_time_s)
    out = [
        f"sweep    {sweep.source}: {sweep.spec.description}" if sweep.spec.description else f"sweep    {sweep.source}",
        f"base     {sweep.base.source}",
        (f"         {len(rows)} scenarios, {solved} with a plan, {len(front)} on the Pareto front "
         f"(time, $ and energy per 1M tokens minimised); wall {wall_s:.1f} s"),
        "",
        line(header),
        line(["-" * w for w in widths]),
        *(line(cells) for cells in body),
    ]
    notes = sorted({n for r in rows for n in r.notes if "price" in n or "power" in n})
    out += [f"note: {n}" for n in notes]
    failed = [r for r in rows if r.plan is None and r.reason]
    if failed:
        out += ["", "why no plan:"]
        out += [f"  {r.scenario.name}: {r.status}: {_short(r.reason, 400)}" for r in failed]
    if front:
        out += ["", "Pareto front (by step time):"]
        for r in front:
            out.append(f"  {r.scenario.name}: {_seconds(r.step_time_s)}, ${r.usd_per_mtok:.3f} and "
                       f"{r.kwh_per_mtok:.3f} kWh per 1M tokens, {r.plan}")
    return "\n".join(out)


def _axis_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _short(text: str | None, limit: int = 60) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
