"""Rule-based embedding-sharding plans as solvers (no bound): planner.recsys.rules."""

from __future__ import annotations

import time

from planner.core.units import format_bytes
from planner.recsys.cost import evaluate
from planner.recsys.rules import greedy_plan, round_robin_plan, row_wise_plan
from solvers.base import SolveOptions, SolveResult


class _Rule:
    exact = False

    def __init__(self, name: str, rule, description: str):
        self.name, self.rule, self.description = name, rule, description

    def solve(self, problem, options: SolveOptions, hints=()) -> SolveResult:
        started = time.perf_counter()
        plan = self.rule(problem)
        b = evaluate(problem, plan)
        plan = plan.model_copy(update={"provenance": plan.provenance.model_copy(update={
            "solver": self.name, "status": "HEURISTIC", "objective_s": b.step_time_s, "problem_hash": problem.hash})})
        wall = time.perf_counter() - started
        if not b.fits:
            return SolveResult(self.name, "INFEASIBLE", wall_time_s=wall, breakdown=b,
                               infeasibility=f"{self.name}: its plan needs {format_bytes(b.peak_memory_bytes)} on rank "
                               f"{b.peak_memory_rank}, {format_bytes(b.memory_capacity_bytes)} usable")
        return SolveResult(self.name, "HEURISTIC", plan=plan, objective_s=b.step_time_s, wall_time_s=wall, breakdown=b)


GREEDY = _Rule("greedy", greedy_plan, "TorchRec-style: table-wise where it fits, largest first on the least-loaded rank")
ROUND_ROBIN = _Rule("madmax-mp", round_robin_plan, "MAD-Max: every table table-wise round-robin, dense FSDP")
ROW_WISE = _Rule("row-wise", row_wise_plan, "every table row-wise, dense DDP")
