"""Solving the scenarios of a sweep on a process pool, and the rows that come out.

Each distinct problem (by problem hash: scenarios that differ only in the price list share one) is
solved once, by the same solver `planner solve` runs (solvers.SOLVERS["cpsat"]) with the same
options, in a worker process; a worker returns plain data. Rows come back in grid order whatever
order the workers finish in.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, replace
from typing import Any

from planner.sweep.pareto import pareto_flags
from planner.sweep.pricing import DeviceCosts, step_economics
from planner.sweep.spec import Scenario, Sweep, problem_from_document

OBJECTIVES = ("step_time_s", "usd_per_mtok", "kwh_per_mtok")
"""The objectives of the Pareto front, each minimised."""


@dataclass
class Row:
    """One scenario's result (the JSON `scenarios[]` entry is `as_json()`)."""

    scenario: Scenario
    status: str
    step_time_s: float | None = None
    best_bound_s: float | None = None
    gap: float | None = None
    tokens_per_s: float | None = None
    mfu: float | None = None
    peak_memory_bytes: float | None = None
    plan: str | None = None
    usd_per_gpu_hour: float | None = None
    board_power_w: float | None = None
    usd_per_step: float | None = None
    usd_per_mtok: float | None = None
    kwh_per_step: float | None = None
    kwh_per_mtok: float | None = None
    solve_wall_s: float | None = None
    reason: str | None = None
    notes: tuple[str, ...] = ()
    problem_hash: str | None = None
    pareto: bool = False

    def as_json(self) -> dict[str, Any]:
        s = self.scenario
        return {
            "name": s.name, "axes": dict(s.axes), "provider": s.provider, "status": self.status,
            "step_time_s": self.step_time_s, "best_bound_s": self.best_bound_s, "gap": self.gap,
            "tokens_per_s": self.tokens_per_s, "mfu": self.mfu, "peak_memory_bytes": self.peak_memory_bytes,
            "usd_per_gpu_hour": self.usd_per_gpu_hour, "board_power_w": self.board_power_w,
            "usd_per_step": self.usd_per_step, "usd_per_mtok": self.usd_per_mtok,
            "kwh_per_step": self.kwh_per_step, "kwh_per_mtok": self.kwh_per_mtok,
            "plan": self.plan, "num_devices": None if s.problem is None else s.problem.cluster.num_devices,
            "device": None if s.problem is None else s.problem.cluster.device.name,
            "tokens_per_step": None if s.problem is None else s.problem.task.tokens_per_step,
            "problem_hash": self.problem_hash, "solve_wall_s": self.solve_wall_s,
            "reason": self.reason, "notes": list(self.notes), "pareto": self.pareto,
        }


def solve_document(document: dict[str, Any], source: str, options) -> dict[str, Any]:
    """Worker: builds the problem from its task document and solves it; returns plain data."""
    from planner.core.errors import PlannerError
    from planner.llm.candidates import alignment
    from solvers import SOLVERS

    try:
        problem = problem_from_document(document, source)
        alignment(problem.model)  # the searches refuse an MoE layer pattern they cannot cut (as `solve` does)
    except PlannerError as exc:
        return {"status": "INVALID", "reason": str(exc)}
    result = SOLVERS["cpsat"].solve(problem, options)
    b = result.breakdown
    return {
        "status": result.status, "objective_s": result.objective_s, "best_bound_s": result.best_bound_s,
        "gap": result.gap, "wall_time_s": result.wall_time_s, "interrupted": result.interrupted,
        "plan": result.plan.summary() if result.plan is not None else None,
        "tokens_per_s": b.tokens_per_s if b is not None else None, "mfu": b.mfu if b is not None else None,
        "peak_memory_bytes": b.peak_memory_bytes if b is not None else None,
        "infeasibility": result.infeasibility, "notes": list(result.notes), "problem_hash": problem.hash,
    }


def run_sweep(sweep: Sweep, options, costs: DeviceCosts, jobs: int,
              progress: Callable[[int, int, Row | None], None] | None = None) -> tuple[list[Row], bool]:
    """(one Row per scenario in grid order, whether it was interrupted). `options` are the
    SolveOptions of one scenario (its deadline is set per solve). Ctrl-C stops the sweep: the
    scenarios not finished are rows with status NOT_RUN."""
    options = replace(options, deadline=None)
    unique: dict[str, list[Scenario]] = {}
    rows: dict[int, Row] = {}
    for s in sweep.scenarios:
        if s.invalid is not None:
            rows[s.index] = Row(s, "INVALID", reason=s.invalid)
        else:
            unique.setdefault(s.problem.hash, []).append(s)
    total = len(sweep.scenarios)
    done = [len(rows)]

    def finish(group: list[Scenario], data: dict[str, Any]) -> None:
        for s in group:
            rows[s.index] = _row(s, data, costs)
            done[0] += 1
            if progress:
                progress(done[0], total, rows[s.index])

    interrupted = False
    if progress:
        progress(done[0], total, None)
    if jobs <= 1 or len(unique) <= 1:
        try:
            for group in unique.values():
                data = solve_document(group[0].document, sweep.source + f" [{group[0].name}]", options)
                finish(group, data)
                if data.get("interrupted"):
                    interrupted = True
                    break
        except KeyboardInterrupt:
            interrupted = True
    else:
        context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
        pool = futures.ProcessPoolExecutor(max_workers=min(jobs, len(unique)), mp_context=context)
        try:
            pending = {pool.submit(solve_document, g[0].document, sweep.source + f" [{g[0].name}]", options): g
                       for g in unique.values()}
            for future in futures.as_completed(pending):
                data = future.result()
                finish(pending[future], data)
                if data.get("interrupted"):
                    interrupted = True
        except KeyboardInterrupt:
            interrupted = True
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    out = [rows.get(s.index) or Row(s, "NOT_RUN", reason="interrupted before this scenario was solved")
           for s in sweep.scenarios]
    for row, flag in zip(out, pareto_flags([_objectives(r) for r in out])):
        row.pareto = flag
    return out, interrupted


def _objectives(row: Row) -> tuple[float, ...] | None:
    values = tuple(getattr(row, name) for name in OBJECTIVES)
    return None if any(v is None for v in values) else values


def _row(scenario: Scenario, data: dict[str, Any], costs: DeviceCosts) -> Row:
    if data["status"] == "INVALID":
        return Row(scenario, "INVALID", reason=data["reason"])
    problem = scenario.problem
    device = problem.cluster.device.name
    row = Row(scenario, data["status"], step_time_s=data["objective_s"], best_bound_s=data["best_bound_s"],
              gap=data["gap"], tokens_per_s=data["tokens_per_s"], mfu=data["mfu"],
              peak_memory_bytes=data["peak_memory_bytes"], plan=data["plan"], solve_wall_s=data["wall_time_s"],
              reason=data["infeasibility"], notes=tuple(data["notes"]), problem_hash=data["problem_hash"])
    notes = list(row.notes)
    power = costs.power(device)
    prices = costs.provider(scenario.provider)
    row.board_power_w = power.board_power_w if power else None
    row.usd_per_gpu_hour = prices.usd_per_gpu_hour.get(device) if prices else None
    if power is None:
        notes.append(f"no board power for device {device} in planner/data/device_costs.yaml: no energy")
    if prices is not None and row.usd_per_gpu_hour is None:
        notes.append(f"price list {scenario.provider} has no price for {device}: no cost")
    if row.step_time_s is not None and data["plan"] is not None:
        num_gpus = problem.cluster.num_devices
        econ = step_economics(num_gpus, row.step_time_s, problem.task.tokens_per_step,
                              row.board_power_w or 0.0, row.usd_per_gpu_hour)
        row.usd_per_step, row.usd_per_mtok = econ.usd_per_step, econ.usd_per_mtok
        if power is not None:
            row.kwh_per_step = econ.joules_per_step / 3.6e6
            row.kwh_per_mtok = econ.kwh_per_mtok
    row.notes = tuple(notes)
    return row
