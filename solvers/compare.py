"""Several solvers on one problem under one deadline (what `planner compare` runs)."""

from __future__ import annotations

import time
from dataclasses import replace

from planner.llm.problem import Problem
from solvers.base import SolveOptions, SolveResult
from solvers.budget import Budget, catch_sigint

HEURISTICS_SHARE = 0.25
"""Of the time left, the most the heuristics take together when an exact solver follows."""


def run_solvers(problem: Problem, names: list[str], options: SolveOptions) -> list[tuple[str, SolveResult]]:
    """Every named solver on `problem`, sharing one deadline: options.deadline, or the call's
    start + options.time_limit_s.

    Order: the heuristics first (fast), together at most HEURISTICS_SHARE of the time left when
    an exact solver follows (all of it otherwise), each an equal share of that; then the exact
    solvers, CP-SAT last, each an equal share of what is left (the last one all of it). CP-SAT and greedy
    reuse the heuristics' results instead of running them again. Ctrl-C during any solver stops
    it (its best plan so far is kept) and the rest: a solver not started gets status UNKNOWN
    with the note "not run: interrupted", or "not run: time limit" once the deadline has
    passed. Results come back in the order of `names`.

    Raises:
        ValueError: a name is not a registered solver.
    """
    from solvers import SOLVERS

    unknown = [n for n in names if n not in SOLVERS]
    if unknown:
        raise ValueError(f"unknown solver {unknown[0]!r}; choose from {', '.join(SOLVERS)}")
    start = time.perf_counter()
    budget = Budget.for_options(options, start)
    heuristics = [i for i, n in enumerate(names) if not SOLVERS[n].exact]
    # CP-SAT last among the exact solvers: it uses all the time it gets, the oracle refuses a
    # large space at once and is quick on a small one.
    exact = sorted((i for i, n in enumerate(names) if SOLVERS[n].exact), key=lambda i: names[i] == "cpsat")
    results: dict[int, SolveResult] = {}
    known: list[SolveResult] = list(options.heuristic_results)
    with catch_sigint(budget):
        phase = budget.share(HEURISTICS_SHARE) if exact else budget
        for position, i in enumerate(heuristics):
            if budget.expired():
                break
            share = phase.share(1.0 / (len(heuristics) - position))
            result = _run(SOLVERS[names[i]], problem, options, share.deadline, known)
            results[i] = result
            if result.plan is not None or result.status == "INFEASIBLE":
                known = [r for r in known if r.solver != result.solver] + [result]
            if result.interrupted:
                budget.interrupt()
        for position, i in enumerate(exact):
            if budget.expired():
                break
            share = budget.share(1.0 / (len(exact) - position))
            result = _run(SOLVERS[names[i]], problem, options, share.deadline, known)
            results[i] = result
            if result.interrupted:
                budget.interrupt()
    for i, name in enumerate(names):
        if i not in results:
            note = "not run: interrupted" if budget.interrupted else "not run: time limit"
            results[i] = SolveResult(solver=name, status="UNKNOWN", notes=[note],
                                     interrupted=budget.interrupted)
    return [(name, results[i]) for i, name in enumerate(names)]


def _run(solver, problem: Problem, options: SolveOptions, deadline: float,
         known: list[SolveResult]) -> SolveResult:
    """One solver until `deadline`; a KeyboardInterrupt that escapes it anyway is its Ctrl-C."""
    start = time.perf_counter()
    try:
        return solver.solve(problem, replace(options, deadline=deadline, heuristic_results=tuple(known)))
    except KeyboardInterrupt:
        return SolveResult(solver=solver.name, status="UNKNOWN", wall_time_s=time.perf_counter() - start,
                           notes=["interrupted before any plan was found"], interrupted=True)
