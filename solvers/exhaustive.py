"""The oracle: every plan of the declared space, priced by the cost model, the best kept.

For each configuration (planner.llm.candidates.enumerate_candidates) it enumerates every stage
partition (each stage a multiple of v layers, at least v) and, with full recompute, every
per-stage count of recomputed layers, and prices them all at once with
planner.llm.cost.step.assemble on numpy arrays -- the same code path as `evaluate`, not the
solver's tables. Exact by construction; refuses spaces with more than
`SolveOptions.max_evaluations` partitions.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np

from planner.llm.candidates import CandidateSet, enumerate_within
from planner.llm.cost.layout import PlanVars
from planner.llm.cost.step import StageSpec, assemble, evaluate
from planner.llm.plan import Plan
from planner.llm.problem import Problem
from solvers.base import SolveOptions, SolveResult
from solvers.budget import Budget, catch_sigint


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


def partition_blocks(config: Plan, num_layers: int, rows: int = 100_000):
    """(layers, recomputed) arrays of shape (K, pp), K <= `rows` where possible, that together
    cover the whole partition space in order (layers, then recomputed counts, last stage
    fastest)."""
    v = config.virtual_stages
    layers = compositions(num_layers // v, config.pp) * v
    if config.recompute != "full":
        for begin in range(0, len(layers), rows):
            block = layers[begin : begin + rows]
            yield block, np.zeros_like(block)
        return
    pending_layers, pending_recomputed, size = [], [], 0
    for row in layers:
        grid = np.indices(tuple(int(n) + 1 for n in row)).reshape(len(row), -1).T.astype(np.int64)
        pending_layers.append(np.repeat(row[None, :], len(grid), axis=0))
        pending_recomputed.append(grid)
        size += len(grid)
        if size >= rows:
            yield np.concatenate(pending_layers), np.concatenate(pending_recomputed)
            pending_layers, pending_recomputed, size = [], [], 0
    if pending_layers:
        yield np.concatenate(pending_layers), np.concatenate(pending_recomputed)


def partitions_with_recompute(config: Plan, num_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """(layers, recomputed) arrays of shape (K, pp) covering the whole partition space."""
    blocks = list(partition_blocks(config, num_layers))
    return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])


SLICE = 100_000
"""Partitions priced per numpy call (the deadline is polled between slices)."""


def best_partition(problem: Problem, config: Plan, budget: Budget | None = None) -> tuple[float, Plan] | None:
    """The fastest fitting partition of one configuration, or None if none fits (or, with a
    budget that ends first, none fits among the partitions priced)."""
    return _best_partition(problem, config, budget)[0]


def _best_partition(problem: Problem, config: Plan,
                    budget: Budget | None) -> tuple[tuple[float, Plan] | None, bool]:
    """(best_partition, whether every partition was priced)."""
    p = config.pp
    m = config.num_micro_batches(problem.task.num_sequences)
    plan_vars = PlanVars.from_plan(config)
    capacity = problem.cluster.device.hbm_bytes * (1.0 - problem.task.memory_headroom)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    complete = True
    for layers, recomputed in partition_blocks(config, problem.model.num_layers, SLICE):
        if budget is not None and budget.expired():
            complete = False
            break
        specs = [
            StageSpec(index=i, layers=layers[:, i], recomputed=recomputed[:, i], is_first=i == 0,
                      is_last=i == p - 1)
            for i in range(p)
        ]
        a = assemble(problem, plan_vars, specs, m)
        step = np.broadcast_to(np.asarray(a.step_s, dtype=float), (len(layers),))
        fits = np.broadcast_to(np.asarray(a.peak_memory_bytes, dtype=float) <= capacity, (len(layers),))
        if not fits.any():
            continue
        local = int(np.argmin(np.where(fits, step, np.inf)))
        if best is None or step[local] < best[0]:
            best = (float(step[local]), layers[local], recomputed[local])
    if best is None:
        return None, complete
    update: dict = {"stage_layers": [int(x) for x in best[1]]}
    if config.recompute == "full":
        update["recompute_num_layers"] = [int(x) for x in best[2]]
    return (best[0], config.model_copy(update=update)), complete


def count_all_partitions(candidates: CandidateSet, num_layers: int, limit: int) -> int:
    """Sum of `count_partitions` over the candidates, computed per distinct (pp, v, full)
    triple; stops counting once it exceeds `limit` (the total is then > limit)."""
    from planner.llm.cost.layout import RECOMPUTE_CODES

    full = (candidates.recompute == RECOMPUTE_CODES["full"]).astype(np.int64)
    packed = (candidates.pp << 32) | (candidates.virtual_stages << 1) | full
    keys, counts = np.unique(packed, return_counts=True)
    total = 0
    for key, n in zip(keys.tolist(), counts.tolist(), strict=True):
        pp, v, is_full = key >> 32, (key & 0xFFFFFFFF) >> 1, key & 1
        chunks = num_layers // v
        count = math.comb(chunks - 1, pp - 1)
        if is_full:
            count *= (chunks - pp + 2) ** pp
        total += n * count
        if total > limit:
            break
    return total


class Exhaustive:
    """The oracle. Polls the deadline and Ctrl-C between configurations (and between slices of
    a configuration's partitions); stopped early, it returns the best plan found so far as
    FEASIBLE with the trivially valid bound 0, or UNKNOWN with a note."""

    name = "exhaustive"
    exact = True

    def solve(self, problem: Problem, options: SolveOptions) -> SolveResult:
        start = time.perf_counter()
        budget = Budget.for_options(options, start)
        state: dict = {"best": None, "done": 0, "stats": {}}
        with catch_sigint(budget):
            try:
                early = self._search(problem, options, budget, state)
            except KeyboardInterrupt:
                budget.interrupt()
                early = None
            if early is not None:
                return early
            return self._answer(problem, options, budget, state, start)

    def _search(self, problem: Problem, options: SolveOptions, budget: Budget,
                state: dict) -> SolveResult | None:
        start = time.perf_counter()
        candidates, complete = enumerate_within(problem, options=options.space, stop=budget.expired)
        state["candidates"], state["complete"] = candidates, complete
        stats = state["stats"]
        stats["configurations"] = len(candidates)
        if complete and len(candidates) == 0:
            from solvers.diagnose import explain_empty_space

            return SolveResult(solver=self.name, status="INFEASIBLE", wall_time_s=time.perf_counter() - start,
                               infeasibility=explain_empty_space(problem, options, budget), stats=stats)
        total = count_all_partitions(candidates, problem.model.num_layers, options.max_evaluations)
        stats["partitions"] = total
        if total > options.max_evaluations:
            return SolveResult(
                solver=self.name, status="UNKNOWN", wall_time_s=time.perf_counter() - start,
                notes=[f"space too large to enumerate: >{options.max_evaluations:,} partitions "
                       f"(max_evaluations)"],
                stats=stats,
            )
        for i in range(len(candidates)):
            if budget.expired():
                break
            found, complete = _best_partition(problem, candidates.plan(i), budget)
            if found and (state["best"] is None or found[0] < state["best"][0]):
                state["best"] = found
            if complete:
                state["done"] = i + 1
        return None

    def _answer(self, problem: Problem, options: SolveOptions, budget: Budget, state: dict,
                start: float) -> SolveResult:
        candidates = state.get("candidates")
        finished = (state.get("complete", False) and candidates is not None
                    and state["done"] == len(candidates))
        stats = state["stats"]
        best = state["best"]
        interrupted = budget.interrupted
        if best is None:
            if finished:
                from solvers.diagnose import explain_infeasible

                return SolveResult(
                    solver=self.name, status="INFEASIBLE", wall_time_s=time.perf_counter() - start,
                    stats=stats, infeasibility=explain_infeasible(problem, options, candidates, None, budget),
                )
            return SolveResult(solver=self.name, status="UNKNOWN", wall_time_s=time.perf_counter() - start,
                               stats=stats, notes=[budget.out_of_time_note(options.time_limit_s)],
                               interrupted=interrupted)
        objective, plan = best
        status, bound = ("OPTIMAL", objective) if finished else ("FEASIBLE", 0.0)
        notes = [] if finished else [
            f"{'interrupted' if interrupted else 'time limit'}: best of {state['done']:,} configurations "
            "searched; best bound 0"]
        wall = time.perf_counter() - start
        gap = 0.0 if finished else 1.0
        plan = plan.model_copy(
            update={"provenance": plan.provenance.model_copy(update={
                "solver": self.name, "status": status, "objective_s": objective, "best_bound_s": bound,
                "gap": gap, "wall_time_s": wall, "problem_hash": problem.hash})}
        )
        try:
            breakdown = evaluate(problem, plan)
        except KeyboardInterrupt:
            breakdown, interrupted = None, True
        return SolveResult(
            solver=self.name, status=status, plan=plan, objective_s=objective, best_bound_s=bound,
            wall_time_s=wall, breakdown=breakdown, stats=stats, notes=notes, interrupted=interrupted,
        )
