"""The exhaustive oracle for embedding sharding: every assignment of counts to options (identical
tables counted, as the exact model does) and every dense strategy, each priced by the cost model;
for small instances only (`SolveOptions.max_evaluations`)."""

from __future__ import annotations

import itertools
import math
import time

from planner.recsys.cost import step_from_loads
from planner.recsys.loads import RankLoads
from solvers.base import SolveOptions, SolveResult
from solvers.recsys.model import build_choices, plan_of


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
        choices = build_choices(problem)
        sizes = [math.comb(g.count + len(g.options) - 1, len(g.options) - 1) for g in choices.groups]
        space = math.prod(sizes) * len(choices.dense)
        if space > options.max_evaluations:
            return SolveResult(self.name, "UNKNOWN", wall_time_s=time.perf_counter() - started,
                               notes=[f"{space:,} plans is more than the {options.max_evaluations:,} the oracle evaluates"])
        world, tiers = choices.topo.world, len(problem.cluster.tiers)
        best = None
        per_group = [list(compositions(g.count, len(g.options))) for g in choices.groups]
        for counts in itertools.product(*per_group):
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
