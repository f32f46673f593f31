"""The exact planner: one CP-SAT model over configurations, stage partitions and recompute.

Pre-processing (Python, valid bounds only; planner.bounds documents each):
  1. The declared space is enumerated (planner.candidates.enumerate_candidates): every
     configuration k = (TP, SP, TP overlap, CP, PP, v, DP, ZeRO stage, HSDP shard, micro-batch,
     recompute mode, axis order) that passes the divisibility rules and the task's constraints.
  2. The best heuristic plan (megatron-rules, fsdp-only, greedy) is the incumbent U.
  3. Configurations with time lower bound LB_k > U are dropped (they cannot be optimal).
  4. Of the rest, at most `max_configs` with the smallest LB_k enter the model; each is priced
     into tables (planner.stage_tables); those whose memory lower bound exceeds the usable
     memory are dropped. The smallest LB of configurations left out caps the proven bound.

Scaling: every time is an integer number of units u = 1 ns, and the objective is 12 T / u
(12 = lcm of v = 1..4, so (sum - max)/v stays integral). Each table entry is rounded to the
nearest unit; `rounding_bound_s` is the worst accumulated rounding error of a configuration
(reported; tested against the cost model's re-evaluation).

Variables, for each configuration k kept (p stages, C = L/v chunks, m micro-batches):
  x_k          Bool: configuration k is chosen; exactly one is.
  c_ki         int in [1, C - p + 1]: chunks (of v layers) on stage i; sum_i c_ki = C if x_k.
  r_ki         int in [0, L] (full recompute only): recomputed layers on stage i, r_ki <= v c_ki.
  y_ki         Bool: r_ki > 0 (stage i pays the recompute transient); r_ki <= L y_ki.
  F_ki, B0_ki  Element(c_ki, table): forward, backward (no recompute) seconds of a micro-batch.
  B_ki         = B0_ki + R_k r_ki: backward with recompute.
  t_ki         = F_ki + B_ki: stage time per micro-batch.
  G_ki, Gf_ki, P_ki, Pf_ki, O_ki  Element(c_ki, table): DP gradient time and its floor, weight
               gather time and its floor, optimizer time.
  SB_ki, SF_ki = sum_{j<i} B_kj, sum_{j<i} F_kj: slack of stage i (stage 0 finishes last).
  eg_ki >= G_ki - wg B_ki, eg_ki >= Gf_ki;  ep_ki >= P_ki - wp F_ki, ep_ki >= Pf_ki.
  tmax_k >= t_ki;  gE_k >= eg_ki - SB_ki, gE_k >= 0;  pE_k >= ep_ki - SF_ki, pE_k >= 0;
  opt_k >= O_ki.
  obj          >= 12 m tmax_k + (12/v)(sum_i t_ki - tmax_k) + 12 (gE_k + pE_k + opt_k + sync_k)
               if x_k; obj >= sum_k 12 LB_k x_k (a valid cut that tightens the bound).
Constraints with enforcement literals (assumptions for infeasibility explanations):
  memory       M_ki(c_ki) + dM_ki r_ki + Tr_ki y_ki <= usable memory, if x_k and A_memory.
When x_k is false its stage variables are fixed (balanced chunks, no recompute).
Objective: minimize obj. Every maximum above is only bounded from below; T increases in each of
tmax, gE, pE, opt, so at the optimum they equal their maxima: obj = 12 T(plan) / u exactly up to
rounding. The chosen plan is decoded and re-priced by planner.cost.step.evaluate.

Search: the incumbent is a solution hint; fixed seed and worker count; `time_limit_s` and
Ctrl-C return the best plan so far with its bound and gap.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from planner.bounds import memory_lower_bound, time_lower_bound
from planner.candidates import enumerate_candidates, price
from planner.cost.step import evaluate
from planner.plan import Plan
from planner.problem import Problem
from planner.stage_tables import StageModel, balanced_chunks, plan_with_partition, stage_model
from solvers.base import SolveOptions, SolveResult
from solvers.heuristics import best_heuristic

UNIT_S = 1e-9
_EXTRA_PARAMETERS: dict = {}  # experiments only
LCM_V = 12
STAGE_BUDGET = 400  # stages (summed over configurations) per CP-SAT round


def _ints(values) -> list[int]:
    return [int(round(float(x) / UNIT_S)) for x in values]


def lower_hull(values: list[int], low: int, high: int) -> list[tuple[int, int, int, int]]:
    """Segments (x0, y0, x1, y1) of the lower convex hull of points (x, values[x]), low <= x <= high.

    Each segment gives a valid linear cut var >= y0 + (y1 - y0) (x - x0) / (x1 - x0) for
    var = values[x]: the cuts tighten CP-SAT's LP relaxation of an element constraint.
    """
    hull: list[tuple[int, int]] = []
    for x in range(low, high + 1):
        point = (x, values[x])
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (y2 - y1) * (point[0] - x1) >= (point[1] - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append(point)
    return [(a[0], a[1], b[0], b[1]) for a, b in zip(hull, hull[1:], strict=False)]


@dataclass
class _ConfigVars:
    k: int
    sm: StageModel
    x: cp_model.IntVar
    chunks: list
    recomputed: list


def _partition_of(plan: Plan, sm: StageModel) -> tuple[list[int], list[int]] | None:
    layers = plan.layers_per_stage(sm.num_layers)
    if any(n % sm.virtual_stages for n in layers):
        return None
    rc = plan.recomputed_layers(sm.num_layers) if sm.recompute_full else [0] * sm.num_stages
    return [n // sm.virtual_stages for n in layers], list(rc)


def _same_config(a: Plan, b: Plan) -> bool:
    keys = ("tp", "sp", "tp_comm_overlap", "cp", "pp", "virtual_stages", "dp", "zero_stage",
            "micro_batch_size", "recompute")
    if any(getattr(a, k) != getattr(b, k) for k in keys):
        return False
    if a.shard_size != b.shard_size:
        return False
    degrees = {ax: a.degree(ax) for ax in ("tp", "cp", "dp", "pp")}
    key = [ax for ax in a.axis_order if degrees[ax] > 1]
    return key == [ax for ax in b.axis_order if degrees[ax] > 1]


def stage_domains(sm: StageModel, upper_s: float) -> list[tuple[int, int]] | None:
    """Valid ranges [lo, hi] of chunks per stage for plans no slower than `upper_s`.

    T >= m t_i >= m (F_i + B_i), so a stage whose time alone exceeds the incumbent is
    excluded; memory excludes counts that cannot fit even with every layer recomputed; then
    sum_i c_i = C gives lo_i = C - sum_{j != i} hi_j. None: no partition can beat the incumbent.
    """
    C, m = sm.chunks, sm.num_micro_batches
    top = C - sm.num_stages + 1
    ranges = []
    for st in sm.stages:
        time_ok = m * (st.forward_s + st.backward_s) <= upper_s * (1 + 1e-9) + 1e-12
        slope = st.memory_per_recomputed_bytes * sm.virtual_stages if sm.recompute_full else 0.0
        least_memory = st.memory_bytes + min(slope, 0.0) * np.arange(len(st.memory_bytes))
        memory_ok = least_memory <= sm.capacity_bytes
        allowed = [c for c in range(1, top + 1) if time_ok[c] and memory_ok[c]]
        if not allowed:
            return None
        ranges.append((min(allowed), max(allowed)))
    total_hi = sum(hi for _, hi in ranges)
    if total_hi < C or sum(lo for lo, _ in ranges) > C:
        return None
    tightened = []
    for lo, hi in ranges:
        lo = max(lo, C - (total_hi - hi))
        if lo > hi:
            return None
        tightened.append((lo, hi))
    return tightened


def build_model(
    models: list[StageModel],
    lower_bounds: list[float],
    incumbent: Plan | None,
    memory_literal: bool = True,
    upper_s: float = math.inf,
):
    """The CP-SAT model of the module docstring; returns (model, configs, objective var, A_memory).

    Configurations that cannot beat `upper_s` (see `stage_domains`) are left out.
    """
    model = cp_model.CpModel()
    a_memory = model.new_bool_var("A_memory")
    configs: list[_ConfigVars] = []
    kept = []
    for sm, lb in zip(models, lower_bounds, strict=True):
        domains = stage_domains(sm, upper_s)
        if domains is not None:
            kept.append((sm, lb, domains))
    horizon = 0
    for sm, _, _ in kept:
        worst = max(np.max(st.forward_s) + np.max(st.backward_s) + sm.num_layers * sm.recompute_s for st in sm.stages)
        dp_worst = max(float(np.max(st.grad_s) + np.max(st.grad_floor_s) + np.max(st.param_s)
                             + np.max(st.param_floor_s) + np.max(st.optimizer_s)) for st in sm.stages)
        total = sm.num_micro_batches * worst + sm.num_stages * worst + dp_worst + sm.embedding_sync_s
        horizon = max(horizon, int(math.ceil(LCM_V * total / UNIT_S)) + 1)
    obj = model.new_int_var(0, max(horizon, 1), "obj")
    xs = []
    for k, (sm, _, domains) in enumerate(kept):
        C, L, v = sm.chunks, sm.num_layers, sm.virtual_stages
        x = model.new_bool_var(f"x_{k}")
        xs.append(x)
        chunks, recomputed = [], []
        t_terms = []
        tmax = model.new_int_var(0, horizon, f"tmax_{k}")
        g_exp = model.new_int_var(0, horizon, f"gE_{k}")
        p_exp = model.new_int_var(0, horizon, f"pE_{k}")
        opt = model.new_int_var(0, horizon, f"opt_{k}")
        slack_b = 0
        slack_f = 0
        r_unit = int(round(sm.recompute_s / UNIT_S))
        m = sm.num_micro_batches
        for i, st in enumerate(sm.stages):
            lo, hi = domains[i]
            c = model.new_int_var(lo, hi, f"c_{k}_{i}")
            model.add(c == lo).only_enforce_if(~x)
            chunks.append(c)

            def element(table, name, c=c, lo=lo, hi=hi):
                values = _ints(table[: hi + 1])
                window = values[lo:]
                var = model.new_int_var(min(window), max(window), f"{name}_{k}_{i}")
                if lo == hi:
                    model.add(var == values[lo])
                    return var
                model.add_element(c, values, var)
                for x0, y0, x1, y1 in lower_hull(values, lo, hi):
                    model.add((x1 - x0) * var >= (x1 - x0) * y0 + (y1 - y0) * (c - x0))
                return var

            f = element(st.forward_s, "F")
            b0 = element(st.backward_s, "B0")
            if sm.recompute_full:
                base = float(np.min((st.forward_s + st.backward_s)[lo : hi + 1]))
                room = upper_s / m - base if math.isfinite(upper_s) else math.inf
                r_top = L if room == math.inf or sm.recompute_s <= 0 else int(min(L, math.floor(room / sm.recompute_s + 1e-9)))
                r_top = max(0, min(r_top, v * hi))
                r = model.new_int_var(0, r_top, f"r_{k}_{i}")
                y = model.new_bool_var(f"y_{k}_{i}")
                model.add(r <= v * c)
                model.add(r <= max(r_top, 1) * y)
                model.add(r == 0).only_enforce_if(~x)
                model.add(y == 0).only_enforce_if(~x)
                b = b0 + r_unit * r
            else:
                r, y = 0, 0
                b = b0
            recomputed.append(r)
            b_var = model.new_int_var(0, horizon, f"B_{k}_{i}")
            model.add(b_var == b)
            t_terms.append(f + b_var)
            model.add(tmax >= f + b_var)
            g = element(st.grad_s, "G")
            gf = element(st.grad_floor_s, "Gf")
            pg = element(st.param_s, "P")
            pf = element(st.param_floor_s, "Pf")
            o = element(st.optimizer_s, "O")
            eg = model.new_int_var(0, horizon, f"eg_{k}_{i}")
            ep = model.new_int_var(0, horizon, f"ep_{k}_{i}")
            model.add(eg >= g - int(sm.grad_window) * b_var)
            model.add(eg >= gf)
            model.add(ep >= pg - int(sm.param_window) * f)
            model.add(ep >= pf)
            model.add(g_exp >= eg - slack_b)
            model.add(p_exp >= ep - slack_f)
            model.add(opt >= o)
            slack_b = slack_b + b_var
            slack_f = slack_f + f
            # Memory: M_i(c) + dM r + transient y <= usable (kibibytes; tables rounded up).
            mem_unit = 1024
            mem_table = [int(math.ceil(float(mb) / mem_unit)) for mb in st.memory_bytes[: hi + 1]]
            window = mem_table[lo:]
            mem = model.new_int_var(min(window), max(window), f"M_{k}_{i}")
            if lo == hi:
                model.add(mem == mem_table[lo])
            else:
                model.add_element(c, mem_table, mem)
                for x0, y0, x1, y1 in lower_hull(mem_table, lo, hi):
                    model.add((x1 - x0) * mem >= (x1 - x0) * y0 + (y1 - y0) * (c - x0))
            per_r = int(math.floor(st.memory_per_recomputed_bytes / mem_unit)) if sm.recompute_full else 0
            trans = int(math.ceil(st.memory_transient_bytes / mem_unit)) if sm.recompute_full else 0
            cap = int(math.floor(sm.capacity_bytes / mem_unit))
            literals = [x, a_memory] if memory_literal else [x]
            model.add(mem + per_r * r + trans * y <= cap).only_enforce_if(literals)
        model.add(sum(chunks) == C).only_enforce_if(x)
        sync = int(round(sm.embedding_sync_s / UNIT_S))
        expr = (LCM_V * m * tmax + (LCM_V // v) * (sum(t_terms) - tmax)
                + LCM_V * (g_exp + p_exp + opt) + LCM_V * sync)
        model.add(obj >= expr).only_enforce_if(x)
        configs.append(_ConfigVars(k=k, sm=sm, x=x, chunks=chunks, recomputed=recomputed))
    if xs:
        model.add_exactly_one(xs)
        # Branch on the configuration first (cheapest bound first): once it is fixed, the rest is
        # a small partition problem whose LP relaxation is tight.
        model.add_decision_strategy(xs, cp_model.CHOOSE_FIRST, cp_model.SELECT_MAX_VALUE)
        model.add(obj >= sum(int(math.floor(LCM_V * lb / UNIT_S)) * x
                             for (_, lb, _), x in zip(kept, xs, strict=True)))
    else:
        model.add_bool_or([])  # nothing can beat the incumbent: infeasible by construction
    model.minimize(obj)
    if incumbent is not None:
        for cv in configs:
            if _same_config(cv.sm.config, incumbent):
                part = _partition_of(incumbent, cv.sm)
                if part is None:
                    continue
                model.add_hint(cv.x, 1)
                for var, value in zip(cv.chunks, part[0], strict=True):
                    model.add_hint(var, value)
                if cv.sm.recompute_full:
                    for var, value in zip(cv.recomputed, part[1], strict=True):
                        model.add_hint(var, value)
                break
    return model, configs, obj, a_memory


def rounding_bound_s(sm: StageModel) -> float:
    """Worst-case |objective * u / 12 - T| from rounding each table entry to a unit."""
    p, m, v, L = sm.num_stages, sm.num_micro_batches, sm.virtual_stages, sm.num_layers
    per_stage = 0.5 * UNIT_S * (2 + 2 + L)  # F, B0, B assembly, recompute coefficient times r <= L
    return m * per_stage + (p * per_stage) / v + 0.5 * UNIT_S * (6 + 4 * p) + p * per_stage * 2


class _Interrupt:
    """Ctrl-C stops the search; the best plan so far is returned."""

    def __init__(self, solver: cp_model.CpSolver):
        self.solver = solver
        self.previous = None
        self.fired = False

    def _stop(self, *_):
        self.fired = True
        self.solver.stop_search()

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._stop)
        except ValueError:  # not the main thread
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def dominance_filter(problem: Problem, candidates) -> np.ndarray:
    """Mask of configurations kept after removing exact duplicates of other configurations.

    Full recompute with per-stage counts includes "none" (every count 0): identical time and
    memory. With flash attention "selective" is identical to "none" (flash already recomputes
    its scores). Dropping these duplicates loses no plan.
    """
    from planner.cost.layout import RECOMPUTE_CODES

    allowed = problem.task.constraints.recompute
    keep = np.ones(len(candidates), dtype=bool)
    flash = problem.task.framework.attention == "flash"
    if "full" in allowed:
        keep &= candidates.recompute != RECOMPUTE_CODES["none"]
        if flash:
            keep &= candidates.recompute != RECOMPUTE_CODES["selective"]
    elif flash and "none" in allowed:
        keep &= candidates.recompute != RECOMPUTE_CODES["selective"]
    return keep


class CpSat:
    name = "cpsat"
    exact = True

    def solve(self, problem: Problem, options: SolveOptions) -> SolveResult:
        """Rounds of CP-SAT models over batches of configurations (see the module doc).

        Configurations are taken in order of their time lower bound. Each round's model holds
        up to `max_configs` configurations whose bound is below the incumbent and requires a
        strictly better plan; when a round is proven (OPTIMAL or INFEASIBLE) its configurations
        are settled. The incumbent is optimal once every configuration is settled or bounded
        above it.
        """
        start = time.perf_counter()
        deadline = start + options.time_limit_s
        stats: dict = {"rounds": 0}
        candidates = enumerate_candidates(problem, options=options.space)
        stats["configurations"] = len(candidates)
        stats["enumerate_s"] = time.perf_counter() - start
        if len(candidates) == 0:
            from solvers.diagnose import explain_empty_space

            return SolveResult(solver=self.name, status="INFEASIBLE", wall_time_s=time.perf_counter() - start,
                               infeasibility=explain_empty_space(problem, options), stats=stats)
        keep = dominance_filter(problem, candidates)
        stats["duplicates_removed"] = int((~keep).sum())
        candidates = candidates.take(np.flatnonzero(keep))
        heuristic = best_heuristic(problem, options)
        incumbent = heuristic.plan if heuristic else None
        upper = heuristic.objective_s if heuristic else math.inf
        stats["heuristic"] = heuristic.solver if heuristic else None
        stats["heuristics_s"] = time.perf_counter() - start - stats["enumerate_s"]
        mark = time.perf_counter()
        lower = time_lower_bound(problem, candidates, upper)
        stats["bounds_s"] = time.perf_counter() - mark
        stats["cannot_fit"] = int(np.isinf(lower).sum())
        # A better incumbent from the uniform split of every configuration still in the window
        # (priced in bulk by the cost model; only evenly divisible configurations).
        window = np.flatnonzero(lower <= upper)
        even = window[problem.model.num_layers % (candidates.pp[window] * candidates.virtual_stages[window]) == 0]
        if len(even):
            priced = price(problem, candidates.take(even))
            fits = np.flatnonzero(priced.fits)
            if len(fits):
                best = fits[int(np.argmin(priced.step_s[fits]))]
                if priced.step_s[best] < upper:
                    incumbent = candidates.plan(int(even[best]))
                    upper = float(evaluate(problem, incumbent).step_time_s)
                    stats["incumbent"] = "uniform split"
        order = [int(i) for i in np.argsort(lower, kind="stable")]
        position = 0
        pruned_time = pruned_memory = 0
        rounding = 0.0
        open_bound = math.inf  # lowest bound of configurations not settled
        interrupted = False
        while True:
            batch, bounds = [], []
            stages_in_batch = 0
            while position < len(order) and len(batch) < options.max_configs and stages_in_batch < STAGE_BUDGET:
                if time.perf_counter() > deadline:
                    break
                i = order[position]
                if lower[i] > upper * (1 + 1e-12) or not math.isfinite(lower[i]):
                    pruned_time += len(order) - position
                    position = len(order)
                    break
                position += 1
                sm = stage_model(problem, candidates.plan(i))
                if memory_lower_bound(sm) > sm.capacity_bytes:
                    pruned_memory += 1
                    continue
                batch.append(sm)
                bounds.append(float(lower[i]))
                stages_in_batch += sm.num_stages
            if not batch:
                break
            # A cheap incumbent from the batch itself: balanced chunks, least recompute that fits.
            for sm in batch:
                guess = balanced_guess(sm)
                if guess is not None and guess[0] < upper * (1 - 1e-12):
                    upper, incumbent = guess[0], plan_with_partition(sm, guess[1], guess[2])
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or interrupted:
                open_bound = min(open_bound, min(bounds))
                break
            stats["rounds"] += 1
            rounding = max(rounding, max(rounding_bound_s(sm) for sm in batch))
            model, configs, obj, a_memory = build_model(batch, bounds, incumbent, upper_s=upper)
            if math.isfinite(upper):
                model.add(obj <= int(math.floor(LCM_V * upper / UNIT_S)) - 1)
            model.add_assumptions([a_memory])
            solver = cp_model.CpSolver()
            solver.parameters.max_time_in_seconds = max(0.05, remaining)
            solver.parameters.num_workers = options.workers
            solver.parameters.random_seed = options.seed
            solver.parameters.log_search_progress = options.log
            # Small rounds get full linearization: their per-configuration objective rows are
            # disjunctive (enforced by x_k) and without that LP the bound can creep up one unit at
            # a time; large rounds search faster with the default.
            if stages_in_batch <= 64:
                solver.parameters.linearization_level = 2
            for key, value in _EXTRA_PARAMETERS.items():
                setattr(solver.parameters, key, value)
            with _Interrupt(solver) as guard:
                status = solver.solve(model)
                interrupted = guard.fired
            if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                chosen = next(cv for cv in configs if solver.boolean_value(cv.x))
                chunks = [int(solver.value(c)) for c in chosen.chunks]
                recomputed = [int(solver.value(r)) if not isinstance(r, int) else 0 for r in chosen.recomputed]
                incumbent = plan_with_partition(chosen.sm, chunks, recomputed)
                upper = solver.objective_value * UNIT_S / LCM_V
                if status == cp_model.FEASIBLE:
                    open_bound = min(open_bound, solver.best_objective_bound * UNIT_S / LCM_V)
            elif status != cp_model.INFEASIBLE:  # UNKNOWN: time ran out before any answer
                open_bound = min(open_bound, min(bounds))
                break
        if position < len(order):
            open_bound = min(open_bound, float(min(lower[order[position:]])))
        finite = np.isfinite(lower)
        stats.update(pruned_by_time_bound=int((finite & (lower > upper * (1 + 1e-12))).sum()),
                     pruned_by_memory_bound=pruned_memory, rounding_bound_s=rounding)
        wall = time.perf_counter() - start
        if incumbent is None:
            if math.isfinite(open_bound):
                return SolveResult(solver=self.name, status="UNKNOWN", wall_time_s=wall, stats=stats,
                                   notes=[f"no plan found within {options.time_limit_s} s"])
            from solvers.diagnose import explain_infeasible

            return SolveResult(solver=self.name, status="INFEASIBLE", wall_time_s=wall, stats=stats,
                               infeasibility=explain_infeasible(problem, options, candidates, lower))
        incumbent = _simplify(problem, incumbent)
        bound = min(upper, open_bound)
        proven = open_bound >= upper - rounding
        notes = ["interrupted: best plan so far"] if interrupted else []
        return self._result(problem, incumbent, upper, upper if proven else bound,
                            "OPTIMAL" if proven else "FEASIBLE", wall, stats, notes)

    def _result(self, problem, plan, objective, bound, status, wall, stats, notes=None) -> SolveResult:
        gap = None if bound is None or objective <= 0 else max(0.0, (objective - bound) / objective)
        plan = plan.model_copy(update={"provenance": plan.provenance.model_copy(update={
            "solver": self.name, "status": status, "objective_s": objective, "best_bound_s": bound,
            "gap": gap, "wall_time_s": wall, "problem_hash": problem.hash})})
        return SolveResult(solver=self.name, status=status, plan=plan, objective_s=objective,
                           best_bound_s=bound, wall_time_s=wall, breakdown=evaluate(problem, plan),
                           stats=stats, notes=list(notes or []))


def balanced_guess(sm: StageModel) -> tuple[float, list[int], list[int]] | None:
    """(step seconds, chunks, recomputed) of the balanced split with, per stage, the fewest
    recomputed layers that fit; None if it does not fit. Priced from the tables."""
    from planner.stage_tables import step_time_s

    chunks = balanced_chunks(sm.chunks, sm.num_stages)
    recomputed = []
    for st, c in zip(sm.stages, chunks, strict=True):
        base = st.memory_bytes[c]
        if base <= sm.capacity_bytes:
            recomputed.append(0)
            continue
        if not sm.recompute_full or st.memory_per_recomputed_bytes >= 0:
            return None
        layers = c * sm.virtual_stages
        need = math.ceil((base + st.memory_transient_bytes - sm.capacity_bytes) / -st.memory_per_recomputed_bytes)
        if need > layers:
            return None
        recomputed.append(need)
    total, peak = step_time_s(sm, chunks, recomputed)
    if peak > sm.capacity_bytes:
        return None
    return total, chunks, recomputed


def _simplify(problem: Problem, plan: Plan) -> Plan:
    """Full recompute with no recomputed layer is plain "none" (identical price) when allowed;
    balanced stage lists that equal the default are dropped."""
    allowed = problem.task.constraints.recompute
    if plan.recompute == "full" and plan.recompute_num_layers is not None and not any(plan.recompute_num_layers):
        if "none" in allowed:
            plan = plan.model_copy(update={"recompute": "none", "recompute_num_layers": None})
    if plan.recompute_num_layers is not None and plan.stage_layers is not None:
        if list(plan.recompute_num_layers) == list(plan.stage_layers):
            plan = plan.model_copy(update={"recompute_num_layers": None})
    if plan.stage_layers is not None and problem.model.num_layers % plan.pp == 0:
        if list(plan.stage_layers) == [problem.model.num_layers // plan.pp] * plan.pp:
            plan = plan.model_copy(update={"stage_layers": None})
    return plan
