"""Solvers behind one interface, by name (cvxpy-style registry)."""

from __future__ import annotations

from solvers.base import SolveOptions, SolveResult, Solver
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

__all__ = ["SOLVERS", "SolveOptions", "SolveResult", "Solver"]
