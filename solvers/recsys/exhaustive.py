"""The exhaustive oracle for embedding sharding: every assignment of counts to options (identical
tables counted, as the exact model does) and every dense strategy, each priced by the cost model;
for small instances only (`SolveOptions.max_evaluations`)."""

from __future__ import annotations

import itertools
import math
import time

from planner.recsys.cost import step_from_loads
from planner.recsys.loads import RankLoads
from planner.recsys.options import dense_strategies, table_options
from solvers.base import SolveOptions, SolveResult
from solvers.recsys.model import OutOfTime, build_choices, plan_of


def compositions(total: int, parts: int):
    """Every way to write `total` as an ordered sum of `parts` non-negative integers."""
    for cuts in itertools.combinations(range(total + parts - 1), parts - 1):
        previous, out = -1, []
        for cut in cuts:
            out.append(cut - previous - 1)
            previous = cut
        out.append(total + parts - 2 - previous)
        yield out


class RecsysExhaustive:
    name = "exhaustive"
    exact = True

    def solve(self, problem, options: SolveOptions, hints=()) -> SolveResult:
        started = time.perf_counter()
        deadline = options.deadline or started + options.time_limit_s
        # The size of the space from the option counts alone (nothing priced yet); a product that
        # passes the limit stops early (the true size may have thousands of digits).
        space = len(dense_strategies(problem))
        for table in problem.model.tables:
            k = len(table_options(problem, table))
            space *= math.comb(table.count + k - 1, k - 1)
            if space > options.max_evaluations:
                return SolveResult(self.name, "UNKNOWN", wall_time_s=time.perf_counter() - started,
                                   notes=[f"more than {options.max_evaluations:,} plans (the most the oracle evaluates)"])
        try:
            choices = build_choices(problem, deadline=deadline)
        except OutOfTime:
            return SolveResult(self.name, "UNKNOWN", wall_time_s=time.perf_counter() - started,
                               notes=[f"out of time ({options.time_limit_s:g} s) before every plan was evaluated"])
        world, tiers = choices.topo.world, len(problem.cluster.tiers)
        best = None
        per_group = [list(compositions(g.count, len(g.options))) for g in choices.groups]
        for step, counts in enumerate(itertools.product(*per_group)):
            if step % 64 == 0 and time.perf_counter() > deadline:
                return SolveResult(self.name, "UNKNOWN", wall_time_s=time.perf_counter() - started,
                                   notes=[f"out of time ({options.time_limit_s:g} s) after {step:,} of {space:,} "
                                          "plans: the oracle proves nothing unless it evaluates them all"])
            loads = RankLoads.zeros(world, tiers)
            for group, row in zip(choices.groups, counts, strict=True):
                for index, n in enumerate(row):
                    if n:
                        single = group.loads(index)
                        for name in RankLoads.ARRAYS:
                            setattr(loads, name, getattr(loads, name) + n * getattr(single, name))
                        loads.dp_table_grad_bytes += n * single.dp_table_grad_bytes
            for d in range(len(choices.dense)):
                plan = plan_of(choices, [list(c) for c in counts], d)
                b = step_from_loads(problem, plan, loads)
                if b.fits and (best is None or b.step_time_s < best[0]):
                    best = (b.step_time_s, plan, b)
        wall = time.perf_counter() - started
        if best is None:
            return SolveResult(self.name, "INFEASIBLE", wall_time_s=wall, infeasibility="no assignment fits in memory",
                               stats={"evaluated": space})
        step, plan, b = best
        plan = plan.model_copy(update={"provenance": plan.provenance.model_copy(update={
            "solver": self.name, "status": "OPTIMAL", "objective_s": step, "best_bound_s": step, "gap": 0.0,
            "problem_hash": problem.hash})})
        return SolveResult(self.name, "OPTIMAL", plan=plan, objective_s=step, best_bound_s=step, wall_time_s=wall,
                           breakdown=b, stats={"evaluated": space})
