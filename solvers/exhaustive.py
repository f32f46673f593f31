"""The oracle: every plan of the declared space, priced by the cost model, the best kept.

For each configuration (planner.candidates.enumerate_candidates) it enumerates every stage
partition (each stage a multiple of v layers, at least v) and, with full recompute, every
per-stage count of recomputed layers, and prices them all at once with
planner.cost.step.assemble on numpy arrays -- the same code path as `evaluate`, not the
solver's tables. Exact by construction; refuses spaces with more than
`SolveOptions.max_evaluations` partitions.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np

from planner.candidates import enumerate_candidates
from planner.cost.layout import PlanVars
from planner.cost.step import StageSpec, assemble, evaluate
from planner.plan import Plan
from planner.problem import Problem
from solvers.base import SolveOptions, SolveResult


def compositions(total: int, parts: int) -> np.ndarray:
    """All ways to write `total` as an ordered sum of `parts` positive integers (rows)."""
    if parts == 1:
        return np.array([[total]])
    rows = [np.diff([0, *cuts, total]) for cuts in itertools.combinations(range(1, total), parts - 1)]
    return np.array(rows, dtype=np.int64).reshape(-1, parts)


def count_partitions(config: Plan, num_layers: int) -> int:
    chunks = num_layers // config.virtual_stages
    count = math.comb(chunks - 1, config.pp - 1)
    if config.recompute == "full":
        # sum over compositions of prod(l_i + 1) is bounded by count * (max l + 1)^pp
        count *= (chunks - config.pp + 2) ** config.pp
    return count


def partitions_with_recompute(config: Plan, num_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """(layers, recomputed) arrays of shape (K, pp) covering the whole partition space."""
    v = config.virtual_stages
    layers = compositions(num_layers // v, config.pp) * v
    if config.recompute != "full":
        return layers, np.zeros_like(layers)
    all_layers, all_recomputed = [], []
    for row in layers:
        grid = np.array(list(itertools.product(*[range(n + 1) for n in row])), dtype=np.int64)
        all_layers.append(np.repeat(row[None, :], len(grid), axis=0))
        all_recomputed.append(grid)
    return np.concatenate(all_layers), np.concatenate(all_recomputed)


def best_partition(problem: Problem, config: Plan) -> tuple[float, Plan] | None:
    """The fastest fitting partition of one configuration, or None if none fits."""
    layers, recomputed = partitions_with_recompute(config, problem.model.num_layers)
    p = config.pp
    specs = [
        StageSpec(index=i, layers=layers[:, i], recomputed=recomputed[:, i], is_first=i == 0, is_last=i == p - 1)
        for i in range(p)
    ]
    m = config.num_micro_batches(problem.task.num_sequences)
    a = assemble(problem, PlanVars.from_plan(config), specs, m)
    capacity = problem.cluster.device.hbm_bytes * (1.0 - problem.task.memory_headroom)
    step = np.broadcast_to(np.asarray(a.step_s, dtype=float), (len(layers),))
    fits = np.broadcast_to(np.asarray(a.peak_memory_bytes, dtype=float) <= capacity, (len(layers),))
    if not fits.any():
        return None
    best = int(np.argmin(np.where(fits, step, np.inf)))
    update: dict = {"stage_layers": [int(x) for x in layers[best]]}
    if config.recompute == "full":
        update["recompute_num_layers"] = [int(x) for x in recomputed[best]]
    return float(step[best]), config.model_copy(update=update)


class Exhaustive:
    name = "exhaustive"
    exact = True

    def solve(self, problem: Problem, options: SolveOptions) -> SolveResult:
        start = time.perf_counter()
        candidates = enumerate_candidates(problem, options=options.space)
        configs = [candidates.plan(i) for i in range(len(candidates))]
        if not configs:
            from solvers.diagnose import explain_empty_space

            return SolveResult(solver=self.name, status="INFEASIBLE", wall_time_s=time.perf_counter() - start,
                               infeasibility=explain_empty_space(problem, options), stats={"configurations": 0})
        total = sum(count_partitions(c, problem.model.num_layers) for c in configs)
        if total > options.max_evaluations:
            return SolveResult(
                solver=self.name, status="UNKNOWN", wall_time_s=time.perf_counter() - start,
                notes=[f"space too large to enumerate: ~{total:,} partitions > max_evaluations "
                       f"{options.max_evaluations:,}"],
                stats={"configurations": len(configs), "partitions": total},
            )
        best: tuple[float, Plan] | None = None
        for config in configs:
            found = best_partition(problem, config)
            if found and (best is None or found[0] < best[0]):
                best = found
        wall = time.perf_counter() - start
        stats = {"configurations": len(configs), "partitions": total}
        if best is None:
            from solvers.diagnose import explain_infeasible

            return SolveResult(
                solver=self.name, status="INFEASIBLE", wall_time_s=wall, stats=stats,
                infeasibility=explain_infeasible(problem, options, candidates, None),
            )
        objective, plan = best
        plan = plan.model_copy(
            update={"provenance": plan.provenance.model_copy(update={
                "solver": self.name, "status": "OPTIMAL", "objective_s": objective, "best_bound_s": objective,
                "gap": 0.0, "wall_time_s": wall, "problem_hash": problem.hash})}
        )
        return SolveResult(
            solver=self.name, status="OPTIMAL", plan=plan, objective_s=objective, best_bound_s=objective,
            wall_time_s=wall, breakdown=evaluate(problem, plan), stats=stats,
        )
