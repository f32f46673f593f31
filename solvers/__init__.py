"""Solvers behind one interface, by name (cvxpy-style registry).

`SOLVERS[name].solve(problem, options)` runs one solver; `run_solvers(problem, names, options)`
runs several under one deadline (`planner compare`). Every solver respects
`SolveOptions.deadline` (or `time_limit_s`) in every phase and turns Ctrl-C into a result
(`SolveResult.interrupted`), never a KeyboardInterrupt.
"""

from __future__ import annotations

from solvers.ortools_import import load_cp_model

load_cp_model()  # first, so that every later `from ortools.sat.python import cp_model` is this one

from solvers.base import SolveOptions, SolveResult, Solver  # noqa: E402
from solvers.compare import run_solvers  # noqa: E402
from solvers.cpsat import CpSat  # noqa: E402
from solvers.exhaustive import Exhaustive  # noqa: E402
from solvers.heuristics import FsdpOnly, Greedy, MegatronRules  # noqa: E402

SOLVERS: dict[str, Solver] = {
    "cpsat": CpSat(),
    "exhaustive": Exhaustive(),
    "megatron-rules": MegatronRules(),
    "fsdp-only": FsdpOnly(),
    "greedy": Greedy(),
}

__all__ = ["SOLVERS", "SolveOptions", "SolveResult", "Solver", "run_solvers"]
