"""Exact embedding sharding as a mixed-integer linear program (OR-Tools' linear solver: SCIP, or
HiGHS): the same decision as the CP-SAT model (solvers/recsys/cpsat.py), written independently in
continuous seconds and bytes, one row per rank for every load -- no shared uniform parts, no owner
payload variables, no integer rounding. It serves two ends: a second exact method that must agree
with CP-SAT on instances too large for the exhaustive oracle (tests/test_recsys_milp.py), and the
measured answer to "CP-SAT or a MILP" (benchmarks/recsys_milp.py, the README).

Variables
    x[g,o]   integer 0..n_g: tables of group g on option o;  z[s] binary: the dense strategy
    u[k,t]   binary: all-to-all k (out, ids) carries traffic on tier t;  w binary: a table is
             data-parallel (the gradient all-reduce runs)
    Lf, Lb, A, I, Ef, Eb, S, T >= 0 (microseconds; memory rows in MiB)
Constraints (loads: planner.recsys.loads through solvers.recsys.model, one table per option)
    sum_o x[g,o] = n_g;  sum_s z[s] = 1
    Lf >= sum x[g,o] lf[g,o,r] and Lb likewise, every rank r
    A >= sum x[g,o] max(sent, received)[g,o,r,t] / rate_t ... written as two rows (sent; received)
         + lat_t u[out,t], every rank and tier; I likewise for the ids; x[g,o] <= n_g u[k,t]
         where option o moves bytes of all-to-all k on tier t
    sum x[g,o] mem[g,o,r] + sum z[s] dense_mem[s] <= usable HBM, every rank
    Ef >= A - sum z[s] bottom_fwd[s];  Eb >= A - sum z[s] bottom_bwd[s]
    S >= sum z[s] (sync[s] - bottom_bwd[s]) + sum x[g,DP] dp_grad_s[g] + dp_lat w - Eb - Lb;
         x[g,DP] <= n_g w
    T >= Lf + Ef + Eb + Lb + S + sum z[s] fixed[s], and T >= I (pipelined input distribution;
         else T >= that chain + I)
Objective: min T. Every max of the cost model is an inequality the minimisation makes tight, as in
the CP-SAT model's doc.
"""

from __future__ import annotations

import time

import numpy as np
from ortools.linear_solver import pywraplp

from planner.recsys.cost import evaluate
from solvers.base import SolveOptions, SolveResult
from solvers.recsys.cpsat import FULL_MODEL_OPTIONS
from solvers.recsys.model import OutOfTime, build_choices, lookup_seconds, plan_of

RELATIVE_GAP = 1e-9
"""The MILP stops when its incumbent is proven within this share of the optimum."""

US, MIB = 1e6, 2.0**-20
"""Units of the program's rows: microseconds and MiB (seconds and bytes would put coefficients of
1e-7 and 1e10 in one model, below and above the solvers' tolerances)."""


class RecsysMilp:
    """The MILP of the module doc, solved by `backend` (SCIP or HIGHS)."""

    exact = True

    def __init__(self, backend: str = "SCIP", name: str = "milp"):
        self.backend, self.name = backend, name

    def solve(self, problem, options: SolveOptions, hints=()) -> SolveResult:
        started = time.perf_counter()
        deadline = options.deadline or started + options.time_limit_s
        solver = pywraplp.Solver.CreateSolver(self.backend)
        if solver is None:
            return SolveResult(self.name, "UNKNOWN", notes=[f"OR-Tools has no {self.backend} backend here"])
        solver.SuppressOutput()  # HiGHS prints a banner on stdout otherwise
        try:
            choices = build_choices(problem, deadline=deadline)
        except OutOfTime as stopped:
            return SolveResult(self.name, "UNKNOWN", wall_time_s=time.perf_counter() - started,
                               notes=[f"the time limit passed while {stopped}"])
        if choices.num_options > FULL_MODEL_OPTIONS:
            return SolveResult(self.name, "UNKNOWN", wall_time_s=time.perf_counter() - started,
                               notes=[f"{choices.num_options:,} options: more than the {FULL_MODEL_OPTIONS:,} an exact "
                                      "model is built for (use cpsat, which bounds and searches larger problems)"])
        topo, tiers = choices.topo, problem.cluster.tiers
        world, inf = topo.world, solver.infinity()
        x = [[solver.IntVar(0, g.count, f"x_{gi}_{oi}") for oi in range(len(g.options))]
             for gi, g in enumerate(choices.groups)]
        z = [solver.BoolVar(f"z_{s}") for s in range(len(choices.dense))]
        solver.Add(sum(z) == 1)
        lf, lb, a, ids, ef, eb, s, t = (solver.NumVar(0, inf, n) for n in ("Lf", "Lb", "A", "I", "Ef", "Eb", "S", "T"))
        rate = np.array([tier.bandwidth_bytes_per_s * tier.efficiency for tier in tiers])
        terms = {key: [[[] for _ in tiers] for _ in range(world)] for key in ("out_send", "out_recv", "ids_send", "ids_recv")}
        per_rank = {key: [[] for _ in range(world)] for key in ("lf", "lb", "mem")}
        carries = {(k, ti): [] for k in ("out", "ids") for ti in range(len(tiers))}
        dp_terms, dp_vars = [], []
        for g, row in zip(choices.groups, x, strict=True):
            solver.Add(sum(row) == g.count)
            for index, var in enumerate(row):
                loads = g.loads(index)
                f, b = lookup_seconds(choices, loads)
                traffic = dict(zip(("out_send", "out_recv", "ids_send", "ids_recv"), loads.traffic(topo), strict=True))
                for r in range(world):
                    for key, values in (("lf", f * US), ("lb", b * US), ("mem", loads.memory_bytes * MIB)):
                        if values[r]:
                            per_rank[key][r].append((float(values[r]), var))
                    for key, array in traffic.items():
                        for ti in range(len(tiers)):
                            if array[r, ti]:
                                terms[key][r][ti].append((float(array[r, ti] / rate[ti] * US), var))
                for kind in ("out", "ids"):
                    for ti in range(len(tiers)):
                        if traffic[f"{kind}_send"][:, ti].any() or traffic[f"{kind}_recv"][:, ti].any():
                            carries[(kind, ti)].append((var, g.count))
                if loads.dp_table_grad_bytes:
                    dp_terms.append((loads.dp_table_grad_bytes * choices.dp_sync_s_per_byte * US, var))
                    dp_vars.append((var, g.count))
        capacity = float(choices.capacity_bytes) * MIB
        for r in range(world):
            solver.Add(lf >= sum(c * v for c, v in per_rank["lf"][r]))
            solver.Add(lb >= sum(c * v for c, v in per_rank["lb"][r]))
            solver.Add(sum(c * v for c, v in per_rank["mem"][r])
                       + sum(float(d.memory_bytes) * MIB * zs for d, zs in zip(choices.dense, z, strict=True)) <= capacity)
        for kind, var_time in (("out", a), ("ids", ids)):
            for ti, tier in enumerate(tiers):
                used = solver.BoolVar(f"u_{kind}_{ti}")
                for var, count in carries[(kind, ti)]:
                    solver.Add(var <= count * used)
                for r in range(world):
                    for direction in ("send", "recv"):
                        solver.Add(var_time >= sum(c * v for c, v in terms[f"{kind}_{direction}"][r][ti])
                                   + tier.latency_s * US * used)
        solver.Add(ef >= a - sum(d.bottom_fwd_s * US * zs for d, zs in zip(choices.dense, z, strict=True)))
        solver.Add(eb >= a - sum(d.bottom_bwd_s * US * zs for d, zs in zip(choices.dense, z, strict=True)))
        any_dp = solver.BoolVar("w")
        for var, count in dp_vars:
            solver.Add(var <= count * any_dp)
        solver.Add(s >= sum((d.sync_s - d.bottom_bwd_s) * US * zs for d, zs in zip(choices.dense, z, strict=True))
                   + sum(c * v for c, v in dp_terms) + choices.dp_sync_latency_s * US * any_dp - eb - lb)
        chain = lf + ef + eb + lb + s + sum(d.fixed_s * US * zs for d, zs in zip(choices.dense, z, strict=True))
        if problem.task.framework.pipelined_input_dist:
            solver.Add(t >= chain)
            solver.Add(t >= ids)
        else:
            solver.Add(t >= chain + ids)
        solver.Minimize(t)
        solver.SetTimeLimit(max(int((deadline - time.perf_counter()) * 1000), 50))
        parameters = pywraplp.MPSolverParameters()
        parameters.SetDoubleParam(pywraplp.MPSolverParameters.RELATIVE_MIP_GAP, RELATIVE_GAP)
        status = solver.Solve(parameters)
        wall = time.perf_counter() - started
        stats = {"options": choices.num_options, "backend": self.backend}
        if status == pywraplp.Solver.INFEASIBLE:
            return SolveResult(self.name, "INFEASIBLE", wall_time_s=wall, stats=stats,
                               infeasibility="no assignment fits in memory")
        if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
            return SolveResult(self.name, "UNKNOWN", wall_time_s=wall, stats=stats,
                               notes=[f"no plan found within {options.time_limit_s:g} s"])
        counts = [[round(v.solution_value()) for v in row] for row in x]
        dense_index = int(np.argmax([zs.solution_value() for zs in z]))
        objective = solver.Objective().Value() / US
        bound = min(solver.Objective().BestBound() / US, objective)
        label = "OPTIMAL" if status == pywraplp.Solver.OPTIMAL else "FEASIBLE"
        plan = plan_of(choices, counts, dense_index, solver=self.name, status=label, objective_s=objective,
                       best_bound_s=bound, gap=max(0.0, (objective - bound) / objective) if objective > 0 else 0.0,
                       problem_hash=problem.hash)
        return SolveResult(self.name, label, plan=plan, objective_s=objective, best_bound_s=bound, wall_time_s=wall,
                           breakdown=evaluate(problem, plan), stats=stats)
