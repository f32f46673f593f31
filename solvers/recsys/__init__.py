"""Embedding-sharding solvers (DLRM family) behind the same SolveOptions / SolveResult as the LLM
solvers: the exact CP-SAT model, the same decision as a MILP (SCIP; a cross-check and a
comparison), the exhaustive oracle, and rule-based plans.

`solve_recsys(problem, names, options)` runs the rules first and gives their plans to CP-SAT as
hints, so the exact search is never worse than a rule. `torchrec` runs TorchRec's own planner
(in its environment) and prices its plan; named beside other solvers, their plans are also priced by
TorchRec's own estimator (a note on TorchRec's row; solvers.recsys.torchrec_baseline).
"""

from __future__ import annotations

from solvers.base import SolveOptions, SolveResult
from solvers.recsys.cpsat import RecsysCpSat
from solvers.recsys.exhaustive import RecsysExhaustive
from solvers.recsys.heuristics import GREEDY, ROUND_ROBIN, ROW_WISE
from solvers.recsys.milp import RecsysMilp
from solvers.recsys.torchrec_baseline import TorchRecPlanner, add_torchrec_estimates

RECSYS_SOLVERS = {
    "cpsat": RecsysCpSat(),
    "exhaustive": RecsysExhaustive(),
    "milp": RecsysMilp("SCIP"),
    GREEDY.name: GREEDY,
    ROUND_ROBIN.name: ROUND_ROBIN,
    ROW_WISE.name: ROW_WISE,
    "torchrec": TorchRecPlanner(),
}

HEURISTICS = (GREEDY.name, ROUND_ROBIN.name, ROW_WISE.name)


def solve_recsys(problem, names: list[str], options: SolveOptions) -> list[SolveResult]:
    """Runs the named solvers; every rule runs first (its plan hints CP-SAT). With torchrec and others
    named, the others' plans are priced by TorchRec's estimator too (add_torchrec_estimates)."""
    results = {}
    for name in HEURISTICS:
        if name in names or "cpsat" in names:
            results[name] = RECSYS_SOLVERS[name].solve(problem, options)
    hints = [r.plan for r in results.values() if r.plan is not None]
    for name in names:
        if name not in results:
            results[name] = RECSYS_SOLVERS[name].solve(problem, options, hints=hints)
    if "torchrec" in names and len(names) > 1:
        add_torchrec_estimates(problem, {n: results[n] for n in names}, options.deadline)
    return [results[n] for n in names]


__all__ = ["RECSYS_SOLVERS", "solve_recsys"]
