"""Solvers behind one interface, by name (cvxpy-style registry).

`SOLVERS[name].solve(problem, options)` runs one solver; `run_solvers(problem, names, options)`
runs several under one deadline (`planner compare`). Every solver respects
`SolveOptions.deadline` (or `time_limit_s`) in every phase and turns Ctrl-C into a result
(`SolveResult.interrupted`), never a KeyboardInterrupt.
"""

from __future__ import annotations

from solvers.base import SolveOptions, SolveResult, Solver
from solvers.compare import run_solvers
from solvers.cpsat import CpSat
from solvers.exhaustive import Exhaustive
from solvers.heuristics import FsdpOnly, Greedy, MegatronRules

SOLVERS: dict[str, Solver] = {
    "cpsat": CpSat(),
    "exhaustive": Exhaustive(),
    "megatron-rules": MegatronRules(),
    "fsdp-only": FsdpOnly(),
    "greedy": Greedy(),
}

__all__ = ["SOLVERS", "SolveOptions", "SolveResult", "Solver", "run_solvers"]
