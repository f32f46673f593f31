"""The solver interface: options in, a result with its proof (or its failure) out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from planner.llm.cost.breakdown import Breakdown
from planner.llm.plan import Plan
from planner.llm.problem import Problem
from planner.llm.space import SpaceOptions


@dataclass(frozen=True)
class SolveOptions:
    """How to search.

    Attributes:
        time_limit_s: wall-clock limit of the whole solve, every phase included (enumeration,
            heuristics, bounds, search); the best plan so far is returned. Used when
            `deadline` is None (the deadline is then the solve's start + time_limit_s).
        deadline: absolute deadline in `time.perf_counter()` seconds (e.g. a command's start
            + its time limit, shared by every solver of `run_solvers`); overrides time_limit_s.
        workers: CP-SAT search workers (fixed for reproducibility).
        seed: CP-SAT random seed.
        space: which plans the search space declares.
        max_configs: largest number of configurations the CP-SAT model holds at once; the rest
            are covered by their lower bounds (reported in the bound).
        max_evaluations: the exhaustive oracle refuses spaces larger than this.
        log: print the CP-SAT search log.
        heuristic_results: results of heuristic solvers already run on this problem with these
            options (`run_solvers` passes them): CP-SAT and greedy reuse their plans instead of
            running those heuristics again.
        progress: called by the exact search after each phase and round with a dict: phase,
            configurations (enumerated), left (not yet settled or bounded out), rounds, best_s
            (the incumbent's step time), bound_s (the best bound proven so far), elapsed_s; None
            where not known yet. For a status line (planner.cli.progress); never for results.
    """

    time_limit_s: float = 10.0
    deadline: float | None = None
    workers: int = 2
    seed: int = 0
    space: SpaceOptions = field(default_factory=SpaceOptions)
    max_configs: int = 25
    max_evaluations: int = 5_000_000
    log: bool = False
    heuristic_results: tuple[SolveResult, ...] = ()
    progress: Callable[[dict], None] | None = None


@dataclass
class SolveResult:
    """A solver's answer. Statuses are results, not exceptions.

    status: OPTIMAL (proven), FEASIBLE (a plan, gap open), INFEASIBLE (proven: no plan fits;
    `infeasibility` says why), UNKNOWN (no plan: out of time or interrupted, `notes` says
    which), HEURISTIC (a rule's plan, no bound). objective_s is the solver's own objective;
    breakdown is the cost model's re-evaluation of the plan. interrupted: Ctrl-C stopped the
    solver (the plan, if any, is the best found before).
    """

    solver: str
    status: str
    plan: Plan | None = None
    objective_s: float | None = None
    best_bound_s: float | None = None
    wall_time_s: float = 0.0
    breakdown: Breakdown | None = None
    infeasibility: str | None = None
    notes: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    interrupted: bool = False

    @property
    def gap(self) -> float | None:
        if self.objective_s is None or self.best_bound_s is None or self.objective_s <= 0:
            return None
        return max(0.0, (self.objective_s - self.best_bound_s) / self.objective_s)


class Solver(Protocol):
    """Anything that turns a problem into a SolveResult."""

    name: str
    exact: bool

    def solve(self, problem: Problem, options: SolveOptions) -> SolveResult: ...
