"""Exact embedding sharding: one CP-SAT model over (table group, option) counts and the dense
strategy, minimising the cost model's step time (planner.recsys.cost) with every rank's memory
as a hard constraint.

Formulation (times in integer picoseconds, memory in bytes; every coefficient is a priced
single-table load from solvers.recsys.model, rounded once to an integer):

Variables
    x[g,o]   integer 0..n_g: tables of group g that take option o (identical tables are counted,
             not enumerated, so DLRM-A's 4096 tables are one integer per option)
    z[s]     boolean: the dense part uses strategy s (DDP, FSDP, TP of each degree)
    Lf, Lb   the forward and backward lookup time of the busiest rank
    A, I     the output and ids all-to-all times (slowest rank and tier)
    u[t], v[t], w  booleans: the output / ids all-to-all uses tier t; some table is data-parallel
    Ef, Eb   the output all-to-all time not hidden under the bottom MLP, forward and backward
    S        the gradient all-reduce time not hidden under the rest of the backward
    T        the step time (the objective)
Constraints
    cover          sum_o x[g,o] = n_g for every group; sum_s z[s] = 1
    lookups        Lf >= sum_{g,o} x[g,o] lf[g,o][r] for every rank r (likewise Lb)
    memory         sum_{g,o} x[g,o] mem[g,o][r] + sum_s z[s] dense_mem[s] <= usable HBM, every r
    all-to-alls    per rank r and tier t, sent and received bytes / (bandwidth * efficiency):
                   A >= send[r,t] + lat[t] u[t] and A >= recv[r,t] + lat[t] u[t]; table- and
                   column-wise owners' bytes enter through per-rank payload variables and the
                   owner-to-everyone map of planner.recsys.loads.Topology (integer matrices), the
                   other types' bytes directly; x[g,o] <= n_g u[t] for options with traffic on t
                   (I and v likewise for the ids)
    overlap        Ef >= A - sum_s z[s] bottom_fwd[s]; Eb >= A - sum_s z[s] bottom_bwd[s];
                   S >= sum_s z[s] sync[s] + dp_sync - sum_s z[s] bottom_bwd[s] - Eb - Lb, where
                   dp_sync = sum x[g,DP] dp[g] + lat_dp w (all >= 0)
    step           T >= Lf + Ef + sum_s z[s] fixed[s] + Eb + Lb + S, and T >= I (pipelined
                   input dist; else T >= that sum + I)
Every max is an inequality a minimisation makes tight, and no slack can lower T by raising
another (Eb and Lb enter S with coefficient -1 and T with +1), so the optimum equals the cost
model's step time of the decoded plan up to the rounding of the coefficients (half a picosecond
per table and term, an owner's payload counted once per peer it reaches; `rounding_s`). Uniform parts of a load (row-wise,
data-parallel and table-row-wise tables load many ranks alike) are summed once into shared
variables, so a rank's constraint holds only the options that load it unevenly.
Hints: the best of the rule-based plans (planner.recsys.rules) and the relaxation's plan
(solvers/recsys/bound.py: its sharding classes placed largest first, then rebalanced by
solvers/recsys/balance.py). The bound is the larger of CP-SAT's and the relaxation's.
Above FULL_MODEL_OPTIONS options the model is not built: the best hint is improved by local
search until the deadline, with the relaxation's bound (`_large`).
"""

from __future__ import annotations

import random
import time

import numpy as np
from ortools.sat.python import cp_model

from planner.core import kernels
from planner.core.units import format_bytes
from planner.recsys.cost import evaluate
from planner.recsys.loads import RankLoads
from solvers.base import SolveOptions, SolveResult
from solvers.recsys.balance import fits, kicked, rebalance, retype, step_s, swap
from solvers.recsys.bound import place, relax
from solvers.recsys.model import Choices, OutOfTime, build_choices, counts_of, lookup_seconds, plan_of

NS = 1e12
"""Integer time units per second (picoseconds: a table's coefficient rounds by at most 0.5 ps)."""

FULL_MODEL_OPTIONS = 8_000
"""Above this many (group, option) variables the exact model is not built: it would take longer to
build and presolve than the time limits people give (856 heterogeneous tables on 64 ranks: 109,440
options, 12 s to build, no solution in 60 s on 2 cores); the relaxation and local search run instead."""

RELAX_SHARE, RELAX_MIN_S, RELAX_CAP_S = 0.15, 5.0, 20.0
"""Time given to the relaxation: this share of what is left, at least the minimum (but at most half
of what is left), at most the cap. 856 tables on 64 ranks: its bound settles in about 4 s (1.6 s
of it building the model); more time only proves the relaxation's own optimum."""

LOCAL_SEARCH_MARGIN_S = 0.5
"""Left at the deadline for pricing and writing the result."""

LOCAL_SEARCH_SLICE_S = 2.0
"""Longest run of sharding-type moves (balance.retype) before the tables are rebalanced again."""

BIG = 10**15
"""Upper bound of a time variable (1000 s per step: slower plans are outside the space) and of
byte sums."""


def _mode(values: np.ndarray) -> float:
    """The most common value (0 when tied with it): the uniform part of a per-rank load."""
    uniques, counts = np.unique(values, return_counts=True)
    best = counts.max()
    if 0 in uniques[counts == best]:
        return 0.0
    return float(uniques[np.argmax(counts)])


def _upper(var) -> int:
    """A variable's upper bound (the proto's repeated domain field takes no negative index)."""
    return int(list(var.proto.domain)[-1])


class _Sums:
    """Per-rank linear sums: a shared uniform part plus sparse per-rank terms."""

    def __init__(self, model: cp_model.CpModel, world: int, name: str):
        self.model, self.name = model, name
        self.world = world
        self.uniform: list[tuple[cp_model.IntVar, int]] = []
        self.sparse: list[list[tuple[cp_model.IntVar, int]]] = [[] for _ in range(world)]
        self.totals: list[tuple[cp_model.IntVar, int]] = []
        """Per variable, its coefficients summed over all ranks (for the averaged cuts)."""
        self._shared = None

    def add(self, var, values: np.ndarray, scale: float, ceil: bool = False) -> None:
        scaled = values * scale
        ints = np.ceil(scaled) if ceil else np.rint(scaled)
        base = _mode(ints)
        if base:
            self.uniform.append((var, int(base)))
        for r in np.nonzero(ints != base)[0]:
            self.sparse[r].append((var, int(ints[r] - base)))
        total = int(ints.sum())
        if total:
            self.totals.append((var, total))

    def add_at(self, var, ranks: np.ndarray, ints: list[int]) -> None:
        """Integer coefficients at a few ranks only (zero elsewhere)."""
        for r, c in zip(ranks, ints, strict=True):
            if c:
                self.sparse[r].append((var, c))
        total = sum(ints)
        if total:
            self.totals.append((var, total))

    def total(self):
        """The sum over all ranks (linear)."""
        return sum(c * v for v, c in self.totals)

    def rank(self, r: int):
        if self._shared is None:
            top = sum(c * _upper(v) for v, c in self.uniform)
            self._shared = self.model.new_int_var(0, max(top, 0), f"{self.name}_uniform")
            self.model.add(self._shared == sum(c * v for v, c in self.uniform))
        return self._shared + sum(c * v for v, c in self.sparse[r])


class RecsysCpSat:
    """CP-SAT over the declared option space (see the module doc)."""

    name = "cpsat"
    exact = True

    def solve(self, problem, options: SolveOptions, hints=()) -> SolveResult:
        started = time.perf_counter()
        deadline = options.deadline or started + options.time_limit_s
        try:
            choices = build_choices(problem, deadline=deadline - LOCAL_SEARCH_MARGIN_S)
        except OutOfTime as stopped:
            return self._best_hint(problem, hints, started, options, f"the time limit passed while {stopped}")
        # The relaxation with interchangeable ranks (solvers/recsys/bound.py): a bound, and a plan
        # from its sharding classes placed largest first, as one more hint.
        left = max(deadline - time.perf_counter(), 0.0)
        relax_s = min(max(RELAX_SHARE * left, min(RELAX_MIN_S, 0.5 * left)), RELAX_CAP_S)
        relaxed_bound, relaxed = relax(choices, relax_s,
                                       options.workers, options.seed, deadline=deadline - LOCAL_SEARCH_MARGIN_S)
        if relaxed is not None:
            placed = place(choices, relaxed, deadline=deadline - LOCAL_SEARCH_MARGIN_S)
            if placed is not None:
                counts, dense_index = placed
                if choices.num_options <= FULL_MODEL_OPTIONS:  # (the large path rebalances its best hint itself)
                    counts = rebalance(choices, counts, dense_index, deadline - LOCAL_SEARCH_MARGIN_S)
                    counts = swap(choices, counts, dense_index, deadline - LOCAL_SEARCH_MARGIN_S)
                hints = (*hints, plan_of(choices, counts, dense_index))
        if choices.num_options > FULL_MODEL_OPTIONS:
            return self._large(problem, choices, hints, relaxed_bound, deadline, started, options.seed)
        model = cp_model.CpModel()
        x = [[model.new_int_var(0, g.count, f"x_{gi}_{oi}") for oi in range(len(g.options))]
             for gi, g in enumerate(choices.groups)]
        for g, row in zip(choices.groups, x, strict=True):
            model.add(sum(row) == g.count)
        z = [model.new_bool_var(f"dense_{s}") for s in range(len(choices.dense))]
        model.add_exactly_one(z)
        terms = self._loads(model, choices, x)
        t = self._objective(model, choices, x, z, terms)
        model.minimize(t)
        hint = self._hint(choices, hints)
        if hint is not None:
            counts, dense_index = hint
            for row, values in zip(x, counts, strict=True):
                for var, value in zip(row, values, strict=True):
                    model.add_hint(var, value)
            for s, var in enumerate(z):
                model.add_hint(var, int(s == dense_index))

        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = max(deadline - time.perf_counter(), 0.05)
        solver.parameters.num_workers = options.workers
        solver.parameters.random_seed = options.seed
        solver.parameters.log_search_progress = options.log
        status = solver.solve(model)
        wall = time.perf_counter() - started
        stats = {"options": choices.num_options, "groups": len(choices.groups), "dense_strategies": len(choices.dense),
                 "rounding_s": self.rounding_s(problem)}
        if status == cp_model.INFEASIBLE:
            return SolveResult(self.name, "INFEASIBLE", wall_time_s=wall, infeasibility=diagnose(choices), stats=stats)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            bound = solver.best_objective_bound / NS if status == cp_model.UNKNOWN else None
            bound = max(bound or 0.0, relaxed_bound or 0.0) or None
            if hint is not None:  # the search found nothing better in time: the best rule's plan stands
                counts, dense_index = hint
                plan = plan_of(choices, counts, dense_index)
                b = evaluate(problem, plan)
                bound = min(bound, b.step_time_s) if bound is not None and bound > 0 else None
                gap = (b.step_time_s - bound) / b.step_time_s if bound else None
                label = "OPTIMAL" if bound and b.step_time_s - bound <= self.rounding_s(problem) else "FEASIBLE"
                plan = plan.model_copy(update={"provenance": plan.provenance.model_copy(update={
                    "solver": self.name, "status": label, "objective_s": b.step_time_s, "best_bound_s": bound,
                    "gap": gap, "problem_hash": problem.hash})})
                return SolveResult(self.name, label, plan=plan, objective_s=b.step_time_s, best_bound_s=bound,
                                   wall_time_s=wall, breakdown=b, stats=stats,
                                   notes=[f"the search found no plan better than its best starting plan (the rules', "
                                          f"the relaxation's) within {options.time_limit_s:g} s; that plan is returned "
                                          "with the best bound"])
            return SolveResult(self.name, "UNKNOWN", wall_time_s=wall, stats=stats,
                               notes=[f"no plan found within {options.time_limit_s:g} s"])
        counts = [[int(solver.value(v)) for v in row] for row in x]
        dense_index = next(s for s, var in enumerate(z) if solver.value(var))
        objective = solver.objective_value / NS
        bound = min(max(solver.best_objective_bound / NS, relaxed_bound or 0.0), objective)
        # Proven also when the relaxation's bound meets the objective (CP-SAT stopped early).
        label = "OPTIMAL" if status == cp_model.OPTIMAL or objective - bound <= self.rounding_s(problem) else "FEASIBLE"
        plan = plan_of(choices, counts, dense_index, solver=self.name, status=label, objective_s=objective,
                       best_bound_s=bound, gap=max(0.0, (objective - bound) / objective) if objective > 0 else 0.0,
                       problem_hash=problem.hash)
        return SolveResult(self.name, label, plan=plan, objective_s=objective, best_bound_s=bound, wall_time_s=wall,
                           breakdown=evaluate(problem, plan), stats=stats)

    def _best_hint(self, problem, hints, started: float, options: SolveOptions, why: str) -> SolveResult:
        """The time limit ran out before the search could start: the best starting plan (the
        rules') stands, without a bound."""
        best = None
        for plan in hints:
            b = evaluate(problem, plan)
            if b.fits and (best is None or b.step_time_s < best[1].step_time_s):
                best = (plan, b)
        wall = time.perf_counter() - started
        note = f"{why}; no bound: give a longer --time-limit for the search"
        if best is None:
            return SolveResult(self.name, "UNKNOWN", wall_time_s=wall, notes=[note + " (no rule's plan fits)"])
        plan, b = best
        source = plan.provenance.solver or "a rule"
        plan = plan.model_copy(update={"provenance": plan.provenance.model_copy(update={
            "solver": self.name, "status": "FEASIBLE", "objective_s": b.step_time_s, "best_bound_s": None, "gap": None,
            "problem_hash": problem.hash})})
        return SolveResult(self.name, "FEASIBLE", plan=plan, objective_s=b.step_time_s, wall_time_s=wall, breakdown=b,
                           notes=[note + f"; the best rule's plan ({source}) is returned"])

    def _large(self, problem, choices: Choices, hints, bound, deadline: float, started: float,
               seed: int = 0) -> SolveResult:
        """More options than the exact model builds in time: the best hint, improved until the
        deadline by moving single tables to other ranks, exchanging pairs of them and moving single
        tables to other sharding types (solvers/recsys/balance.py), until none of these helps; then, while time is left, an
        iterated local search: a few tables of the best plan moved to random ranks (seeded), moved
        and exchanged again, the better plan kept. With the relaxation's bound."""
        hint = self._hint(choices, hints)
        stats = {"options": choices.num_options, "groups": len(choices.groups), "dense_strategies": len(choices.dense),
                 "exact_model": "not built"}
        if hint is None:
            return SolveResult(self.name, "UNKNOWN", wall_time_s=time.perf_counter() - started, stats=stats,
                               notes=["no rule's plan fits, and the exact model is too large to build in time"])
        counts, dense_index = hint
        stop = deadline - LOCAL_SEARCH_MARGIN_S

        def descend(counts, sharding_types: bool = True):
            if not sharding_types:
                return swap(choices, rebalance(choices, counts, dense_index, stop), dense_index, stop)
            while time.perf_counter() < stop:  # other sharding types, then places again
                moved = retype(choices, counts, dense_index, min(stop, time.perf_counter() + LOCAL_SEARCH_SLICE_S))
                moved = swap(choices, rebalance(choices, moved, dense_index, stop), dense_index, stop)
                if moved == counts:
                    break
                counts = moved
            return counts

        counts = descend(counts)
        best_s = step_s(choices, counts, dense_index)
        rng = random.Random(seed)
        kicks = 0
        while time.perf_counter() < stop:  # iterated local search: kick the best plan, rebalance again
            trial = descend(kicked(choices, counts, rng), sharding_types=False)
            kicks += 1
            trial_s = step_s(choices, trial, dense_index)
            if trial_s < best_s and fits(choices, trial, dense_index):
                counts, best_s = trial, trial_s
        stats["kicks"] = kicks
        plan = plan_of(choices, counts, dense_index)
        b = evaluate(problem, plan)
        bound = bound if bound is not None and 0 < bound <= b.step_time_s else None
        gap = (b.step_time_s - bound) / b.step_time_s if bound else None
        status = "OPTIMAL" if gap is not None and gap <= 1e-9 else "FEASIBLE"
        plan = plan.model_copy(update={"provenance": plan.provenance.model_copy(update={
            "solver": self.name, "status": status, "objective_s": b.step_time_s, "best_bound_s": bound, "gap": gap,
            "problem_hash": problem.hash})})
        note = (f"{choices.num_options:,} options: more than the {FULL_MODEL_OPTIONS:,} the exact model is built for; "
                "the best of the relaxation's and the rules' plans, improved by moving single tables (to other ranks, "
                "and to other sharding types), with the relaxation's bound (ranks interchangeable)")
        return SolveResult(self.name, status, plan=plan, objective_s=b.step_time_s, best_bound_s=bound,
                           wall_time_s=time.perf_counter() - started, breakdown=b, stats=stats, notes=[note])

    @staticmethod
    def rounding_s(problem) -> float:
        """A bound on |CP-SAT objective - the cost model's step time of the same plan|: half a
        time unit per table in each term, an owner's payload term counted once per peer (at most
        the world size) and the all-to-all entering the step up to twice (Ef, Eb)."""
        return 0.5 * problem.model.num_tables * (8 + 2 * problem.cluster.num_devices) / NS

    def _loads(self, model, choices: Choices, x):
        problem, topo = choices.problem, choices.topo
        world, tiers = topo.world, problem.cluster.tiers
        inverse_bw = [NS / (tier.bandwidth_bytes_per_s * tier.efficiency) for tier in tiers]
        sums = {key: _Sums(model, world, key) for key in ("lf", "lb", "mem")}
        for key in ("out_send", "out_recv", "ids_send", "ids_recv"):
            for ti in range(len(tiers)):
                sums[(key, ti)] = _Sums(model, world, f"{key}_{ti}")
        out_pay = [[[] for _ in tiers] for _ in range(world)]
        ids_pay = [[[] for _ in tiers] for _ in range(world)]
        uses = {("out", ti): [] for ti in range(len(tiers))} | {("ids", ti): [] for ti in range(len(tiers))}
        dp_terms = []
        device = problem.cluster.device
        rings = [topo.ring(ti) for ti in range(len(tiers))]
        for g, row in zip(choices.groups, x, strict=True):
            compact: dict[int, dict] = {}  # the integer coefficients of an owner-only option, per values table
            for index, (item, var) in enumerate(zip(g.priced, row, strict=True)):
                if item is None:  # priced when asked for
                    item = g.loads(index)
                if not isinstance(item, RankLoads):
                    ranks, values = item
                    coeffs = compact.get(id(values))
                    if coeffs is None:
                        coeffs = {
                            "lf": [int(round(v * NS)) for v in kernels.memory_bound_time_s(values["lookup_fwd_bytes"], device)],
                            "lb": [int(round(v * NS)) for v in kernels.memory_bound_time_s(values["lookup_bwd_bytes"], device)],
                            "mem": [int(np.ceil(v)) for v in values["memory_bytes"]],
                            "out": [[int(round(v * inverse_bw[ti])) for v in values["out_payload"]] for ti in range(len(tiers))],
                            "ids": [[int(round(v * inverse_bw[ti])) for v in values["ids_payload"]] for ti in range(len(tiers))],
                        }
                        compact[id(values)] = coeffs
                    sums["lf"].add_at(var, ranks, coeffs["lf"])
                    sums["lb"].add_at(var, ranks, coeffs["lb"])
                    sums["mem"].add_at(var, ranks, coeffs["mem"])
                    for ti in range(len(tiers)):
                        for j, r in enumerate(ranks):
                            if coeffs["out"][ti][j]:
                                out_pay[r][ti].append((var, coeffs["out"][ti][j]))
                            if coeffs["ids"][ti][j]:
                                ids_pay[r][ti].append((var, coeffs["ids"][ti][j]))
                        if rings[ti] and any(values["out_payload"]):
                            uses[("out", ti)].append((var, g.count))
                        if rings[ti] and any(values["ids_payload"]):
                            uses[("ids", ti)].append((var, g.count))
                    continue
                loads = item
                lf, lb = lookup_seconds(choices, loads)
                sums["lf"].add(var, lf, NS)
                sums["lb"].add(var, lb, NS)
                sums["mem"].add(var, loads.memory_bytes, 1.0, ceil=True)
                for ti in range(len(tiers)):
                    sums[("out_send", ti)].add(var, loads.out_send[:, ti], inverse_bw[ti])
                    sums[("out_recv", ti)].add(var, loads.out_recv[:, ti], inverse_bw[ti])
                    sums[("ids_send", ti)].add(var, loads.ids_send[:, ti], inverse_bw[ti])
                    sums[("ids_recv", ti)].add(var, loads.ids_recv[:, ti], inverse_bw[ti])
                    for r in np.nonzero(loads.out_payload)[0]:
                        out_pay[r][ti].append((var, int(round(loads.out_payload[r] * inverse_bw[ti]))))
                    for r in np.nonzero(loads.ids_payload)[0]:
                        ids_pay[r][ti].append((var, int(round(loads.ids_payload[r] * inverse_bw[ti]))))
                    # traffic on this tier: its own bytes, or an owner payload reaching peers here
                    if loads.out_send[:, ti].any() or loads.out_recv[:, ti].any() or rings[ti] and loads.out_payload.any():
                        uses[("out", ti)].append((var, g.count))
                    if loads.ids_send[:, ti].any() or loads.ids_recv[:, ti].any() or rings[ti] and loads.ids_payload.any():
                        uses[("ids", ti)].append((var, g.count))
                if loads.dp_table_grad_bytes:
                    dp_terms.append((var, g.count, int(round(loads.dp_table_grad_bytes * choices.dp_sync_s_per_byte * NS))))
        # Owner payloads as variables (per rank and tier), spread by the cost model's owner map.
        unit = np.eye(world)
        received = np.stack([topo.owner_traffic(unit[o])[1] for o in range(world)], axis=0)  # [o, r, t]
        pay = {}
        for kind, source in (("out", out_pay), ("ids", ids_pay)):
            for r in range(world):
                for ti in range(len(tiers)):
                    if source[r][ti]:
                        top = sum(c * _upper(v) for v, c in source[r][ti])
                        var = model.new_int_var(0, top, f"pay_{kind}_{r}_{ti}")
                        model.add(var == sum(c * v for v, c in source[r][ti]))
                        pay[(kind, r, ti)] = var
        return sums, pay, received, rings, uses, dp_terms

    def _objective(self, model, choices: Choices, x, z, terms):
        sums, pay, received, rings, uses, dp_terms = terms
        problem, topo = choices.problem, choices.topo
        world, tiers = topo.world, problem.cluster.tiers
        new = model.new_int_var
        lf, lb, a, ids = new(0, BIG, "Lf"), new(0, BIG, "Lb"), new(0, BIG, "A"), new(0, BIG, "I")
        capacity = int(np.floor(choices.capacity_bytes))
        # Averaged cuts (implied by the per-rank rows, exactly in integers; they give the LP bound
        # the mean load at once): W Lf >= the lookups summed over ranks, likewise Lb.
        model.add(world * lf >= sums["lf"].total())
        model.add(world * lb >= sums["lb"].total())
        for r in range(world):
            model.add(lf >= sums["lf"].rank(r))
            model.add(lb >= sums["lb"].rank(r))
            model.add(sums["mem"].rank(r) + sum(int(np.ceil(d.memory_bytes)) * zs
                                                for d, zs in zip(choices.dense, z, strict=True)) <= capacity)
        for kind, var_time, send_key, recv_key in (("out", a, "out_send", "out_recv"), ("ids", ids, "ids_send", "ids_recv")):
            for ti, tier in enumerate(tiers):
                used = model.new_bool_var(f"uses_{kind}_{ti}")
                if uses[(kind, ti)]:  # any table on an option with traffic on this tier sets it
                    model.add(sum(v for v, _ in uses[(kind, ti)]) <= problem.model.num_tables * used)
                latency = int(round(tier.latency_s * NS)) * used
                owners = [r for r in range(world) if (kind, r, ti) in pay]
                # Averaged cut: W (time - latency) >= the bytes every rank receives (owners' payloads
                # reach rings[ti] peers each on this tier).
                received_total = (sums[(recv_key if kind == "out" else send_key, ti)].total()
                                  + sum(rings[ti] * pay[(kind, o, ti)] for o in owners))
                model.add(world * var_time >= received_total + world * latency)
                for r in range(world):
                    spread = sum(int(received[o, r, ti]) * pay[(kind, o, ti)] for o in owners
                                 if received[o, r, ti])
                    own = rings[ti] * pay[(kind, r, ti)] if (kind, r, ti) in pay else 0
                    # out: owners send (own), everyone receives (spread); ids the other way round
                    send = sums[(send_key, ti)].rank(r) + (own if kind == "out" else spread)
                    recv = sums[(recv_key, ti)].rank(r) + (spread if kind == "out" else own)
                    model.add(var_time >= send + latency)
                    model.add(var_time >= recv + latency)
        ns = lambda seconds: int(round(seconds * NS))  # noqa: E731
        ef, eb, s = new(0, BIG, "Ef"), new(0, BIG, "Eb"), new(0, BIG, "S")
        model.add(ef >= a - sum(ns(d.bottom_fwd_s) * zs for d, zs in zip(choices.dense, z, strict=True)))
        model.add(eb >= a - sum(ns(d.bottom_bwd_s) * zs for d, zs in zip(choices.dense, z, strict=True)))
        any_dp = model.new_bool_var("any_dp")
        if dp_terms:
            model.add(sum(var for var, _, _ in dp_terms) <= problem.model.num_tables * any_dp)
        dp_sync = sum(c * var for var, _, c in dp_terms) + ns(choices.dp_sync_latency_s) * any_dp
        model.add(s >= sum(ns(d.sync_s - d.bottom_bwd_s) * zs for d, zs in zip(choices.dense, z, strict=True))
                  + dp_sync - eb - lb)
        chain = lf + ef + eb + lb + s + sum(ns(d.fixed_s) * zs for d, zs in zip(choices.dense, z, strict=True))
        t = new(0, BIG, "T")
        if problem.task.framework.pipelined_input_dist:
            model.add(t >= chain)
            model.add(t >= ids)
        else:
            model.add(t >= chain + ids)
        return t

    @staticmethod
    def _hint(choices: Choices, hints):
        best = None
        for plan in hints:
            found = counts_of(choices, plan)
            if found is None:
                continue
            b = evaluate(choices.problem, plan)
            if b.fits and (best is None or b.step_time_s < best[0]):
                best = (b.step_time_s, found)
        return None if best is None else best[1]


def diagnose(choices: Choices) -> str:
    """Why no plan fits: the least memory the tables need on the busiest rank versus what a rank has."""
    world = choices.topo.world
    least_total = 0.0
    worst_group, worst = None, 0.0
    for g in choices.groups:
        every = [g.loads(i) for i in range(len(g.options))]
        per_table = min(float(loads.memory_bytes.sum()) for loads in every)
        least_total += g.count * per_table
        single = min(float(loads.memory_bytes.max()) for loads in every)
        if single > worst:
            worst_group, worst = g.name, single
    dense = min(d.memory_bytes for d in choices.dense)
    usable = choices.capacity_bytes
    need = least_total / world + dense
    if need > usable:
        return (f"the embeddings need at least {format_bytes(least_total)} over {world} ranks "
                f"({format_bytes(least_total / world)} per rank at best) plus {format_bytes(dense)} dense and "
                f"framework memory per rank, but a rank has {format_bytes(usable)} usable: over by "
                f"{format_bytes(need - usable)} per rank; use more devices, smaller table dtypes (fp16), "
                "a row-wise optimizer (rowwise_adagrad) or fewer rows")
    return (f"no assignment fits every rank's {format_bytes(usable)}: group {worst_group!r} needs at least "
            f"{format_bytes(worst)} on one rank under any option, with {format_bytes(dense)} dense beside it; "
            "allow more sharding types, use more devices or smaller tables")
