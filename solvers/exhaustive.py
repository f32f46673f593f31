"""The oracle: every plan of the declared space, priced by the cost model, the best kept.

For each configuration (planner.llm.space.enumerate_candidates) it enumerates every stage
partition (each stage a multiple of v layers, at least v) and, with full recompute, every
per-stage count of recomputed layers, and prices them all at once with
planner.llm.cost.step.assemble on numpy arrays -- the same code path as `evaluate`, not the
solver's tables. Exact by construction; refuses spaces with more than
`SolveOptions.max_evaluations` partitions.

MoE models: every *aligned* partition (planner.llm.candidates.Alignment: each stage a multiple
of v P layers, stage 0's first chunk holding the dense prefix), each stage's MoE blocks counted
by `planner.llm.cost.blocks.layer_mix` (the cost model's own count, not the solver's formula),
and with full recompute every count of recomputed MoE blocks per stage.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np

from planner.llm.candidates import Alignment, CandidateSet, alignment, plan_vars
from planner.llm.cost.blocks import layer_mix
from planner.llm.cost.layout import PlanVars
from planner.llm.cost.step import StageSpec, assemble, evaluate
from planner.llm.plan import Plan
from planner.llm.problem import Problem
from planner.llm.space import SpaceTooLarge, enumerate_within
from solvers.base import SolveOptions, SolveResult
from solvers.budget import Budget, catch_sigint

DENSE = Alignment()
"""A dense model's alignment: stages of whole chunks of v layers."""


def compositions(total: int, parts: int) -> np.ndarray:
    """All ways to write `total` as an ordered sum of `parts` positive integers (rows)."""
    if parts == 1:
        return np.array([[total]])
    rows = [np.diff([0, *cuts, total]) for cuts in itertools.combinations(range(1, total), parts - 1)]
    return np.array(rows, dtype=np.int64).reshape(-1, parts)


def _units(num_layers: int, v: int, align: Alignment) -> tuple[int, int]:
    """(units to distribute, units of v P layers each; stage 0's extra minimum units)."""
    units = align.units(num_layers, v) or 0
    return units, align.min_first_units - 1


def count_partitions(config: Plan, num_layers: int, align: Alignment = DENSE) -> int:
    units, extra = _units(num_layers, config.virtual_stages, align)
    chunks = units - extra
    count = math.comb(chunks - 1, config.pp - 1) if chunks >= config.pp else 0
    if config.recompute == "full":
        # sum over compositions of prod(l_i + 1) is bounded by count * (max l + 1)^pp
        count *= (chunks - config.pp + 2) ** config.pp
    return count


def aligned_compositions(num_layers: int, pp: int, v: int, align: Alignment = DENSE) -> np.ndarray:
    """Layers per stage of every aligned partition (rows): stages of whole units of v P layers,
    stage 0 at least `Alignment.min_first_units` units (dense: every partition into multiples
    of v)."""
    units, extra = _units(num_layers, v, align)
    if units - extra < pp:
        return np.zeros((0, pp), dtype=np.int64)
    rows = compositions(units - extra, pp)
    rows[:, 0] += extra
    return rows * v * align.period


def partition_blocks(config: Plan, num_layers: int, rows: int = 100_000, model=None):
    """(layers, recomputed) arrays of shape (K, pp), K <= `rows` where possible, that together
    cover the whole partition space in order (layers, then recomputed counts, last stage
    fastest). With an MoE `model`, the aligned partitions and, per stage, 0..its MoE blocks
    recomputed (layer_mix)."""
    v = config.virtual_stages
    align = alignment(model) if model is not None else DENSE
    layers = aligned_compositions(num_layers, config.pp, v, align)
    if config.recompute != "full":
        for begin in range(0, len(layers), rows):
            block = layers[begin : begin + rows]
            yield block, np.zeros_like(block)
        return
    pending_layers, pending_recomputed, size = [], [], 0
    for row in layers:
        tops = layer_mix(model, [int(n) for n in row], v) if align.moe else row
        grid = np.indices(tuple(int(n) + 1 for n in tops)).reshape(len(row), -1).T.astype(np.int64)
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
    m = config.num_micro_batches(config.sequences(problem.task))
    variables = PlanVars.from_plan(config)
    capacity = problem.cluster.device.hbm_bytes * (1.0 - problem.task.memory_headroom)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    complete = True
    model = problem.model
    is_moe = getattr(model, "family", "dense") == "moe"
    for layers, recomputed in partition_blocks(config, model.num_layers, SLICE, model):
        if budget is not None and budget.expired():
            complete = False
            break
        if is_moe:  # the cost model's own count of MoE blocks per stage, per distinct partition
            distinct, inverse = np.unique(layers, axis=0, return_inverse=True)
            counts = np.array([layer_mix(model, [int(n) for n in row], config.virtual_stages) for row in distinct],
                              dtype=float).reshape(len(distinct), p)
            mix = counts[np.asarray(inverse).reshape(-1)]
        specs = [
            StageSpec(index=i, layers=layers[:, i], recomputed=recomputed[:, i], is_first=i == 0,
                      is_last=i == p - 1, moe_layers=mix[:, i] if is_moe else 0)
            for i in range(p)
        ]
        a = assemble(problem, variables, specs, m)
        step = np.broadcast_to(np.asarray(a.step_s, dtype=float), (len(layers),))
        fits = np.broadcast_to(np.asarray(a.peak_memory_bytes, dtype=float) <= capacity, (len(layers),))
        if not fits.any():
            continue
        step = step * config.batch_weight(problem.task)
        local = int(np.argmin(np.where(fits, step, np.inf)))
        if best is None or step[local] < best[0]:
            best = (float(step[local]), layers[local], recomputed[local])
    if best is None:
        return None, complete
    update: dict = {"stage_layers": [int(x) for x in best[1]]}
    if config.recompute == "full":
        update["recompute_num_layers"] = [int(x) for x in best[2]]
    return (best[0], config.model_copy(update=update)), complete


def count_all_partitions(candidates: CandidateSet, num_layers: int, limit: int,
                         align: Alignment = DENSE) -> int:
    """Sum of `count_partitions` over the candidates, computed per distinct (pp, v, full)
    triple; stops counting once it exceeds `limit` (the total is then > limit)."""
    from planner.llm.cost.layout import RECOMPUTE_CODES

    full = (candidates.recompute == RECOMPUTE_CODES["full"]).astype(np.int64)
    packed = (candidates.pp << 32) | (candidates.virtual_stages << 1) | full
    keys, counts = np.unique(packed, return_counts=True)
    total = 0
    for key, n in zip(keys.tolist(), counts.tolist(), strict=True):
        pp, v, is_full = key >> 32, (key & 0xFFFFFFFF) >> 1, key & 1
        units, extra = _units(num_layers, v, align)
        chunks = units - extra
        count = math.comb(chunks - 1, pp - 1) if chunks >= pp else 0
        if is_full:
            count *= (chunks - pp + 2) ** pp
        total += n * count
        if total > limit:
            break
    return total


def _price_all(problem: Problem, candidates: CandidateSet, budget: Budget, state: dict) -> None:
    """Every partition of every configuration, priced in bulk: configurations that share a
    partition space (same PP, virtual stages and full recompute or not) are priced together,
    up to SLICE (configuration, partition) pairs per call. The answer is the one a scan of
    the configurations in order would give: the fastest fitting plan, ties to the earliest
    configuration, then to its earliest partition. Sets state["best"] (step, plan) and
    state["done"] (configurations whose every partition was priced)."""
    from planner.llm.cost.layout import RECOMPUTE_CODES

    model = problem.model
    is_moe = getattr(model, "family", "dense") == "moe"
    capacity = problem.cluster.device.hbm_bytes * (1.0 - problem.task.memory_headroom)
    full = (candidates.recompute == RECOMPUTE_CODES["full"]).astype(np.int64)
    keys = (candidates.pp << 32) | (candidates.virtual_stages << 1) | full
    _, first_seen, group_of = np.unique(keys, return_index=True, return_inverse=True)
    best: dict[int, tuple[float, np.ndarray, np.ndarray]] = {}
    done = 0

    def settle() -> None:
        if best:
            i = min(best, key=lambda j: (best[j][0], j))
            step, layers, recomputed = best[i]
            config = candidates.plan(i)
            update: dict = {"stage_layers": [int(x) for x in layers]}
            if config.recompute == "full":
                update["recompute_num_layers"] = [int(x) for x in recomputed]
            state["best"] = (step, config.model_copy(update=update))
        state["done"] = done

    for group in np.argsort(first_seen, kind="stable"):
        members = np.flatnonzero(group_of.reshape(-1) == group)
        config = candidates.plan(int(members[0]))
        p, v = config.pp, config.virtual_stages
        complete = True
        for layers, recomputed in partition_blocks(config, model.num_layers, SLICE, model):
            rows = len(layers)
            mix = None
            if is_moe:  # the cost model's own count of MoE blocks per stage, per distinct partition
                distinct, inverse = np.unique(layers, axis=0, return_inverse=True)
                counts = np.array([layer_mix(model, [int(n) for n in row], v) for row in distinct],
                                  dtype=float).reshape(len(distinct), p)
                mix = counts[np.asarray(inverse).reshape(-1)]
            per_call = max(1, SLICE // max(rows, 1))
            for begin in range(0, len(members), per_call):
                if budget.expired():
                    complete = False
                    break
                chunk = members[begin : begin + per_call]
                sub = candidates.take(np.repeat(chunk, rows))
                m = sub.num_micro_batches(problem.task)
                specs = [
                    StageSpec(index=i, layers=np.tile(layers[:, i], len(chunk)),
                              recomputed=np.tile(recomputed[:, i], len(chunk)), is_first=i == 0,
                              is_last=i == p - 1, moe_layers=np.tile(mix[:, i], len(chunk)) if is_moe else 0)
                    for i in range(p)
                ]
                a = assemble(problem, plan_vars(sub), specs, m)
                # With a free batch, the time per reference batch (planner.llm.plan.Plan.batch_weight).
                step = (np.broadcast_to(np.asarray(a.step_s, dtype=float), (len(sub),))
                        * sub.batch_weight(problem.task)).reshape(len(chunk), rows)
                fits = np.broadcast_to(np.asarray(a.peak_memory_bytes, dtype=float) <= capacity,
                                       (len(sub),)).reshape(len(chunk), rows)
                masked = np.where(fits, step, np.inf)
                local = np.argmin(masked, axis=1)
                for j, i in enumerate(chunk.tolist()):
                    value = float(masked[j, local[j]])
                    if np.isfinite(value) and (i not in best or value < best[i][0]):
                        best[i] = (value, layers[local[j]], recomputed[local[j]])
            if not complete:
                break
        if complete:
            done += len(members)
        settle()
        if not complete:
            return


class Exhaustive:
    """The oracle. Polls the deadline and Ctrl-C between bulk pricing calls (`_price_all`: at
    most SLICE configuration-partition pairs each); stopped early, it returns the best plan
    found so far as FEASIBLE with the trivially valid bound 0, or UNKNOWN with a note."""

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
        try:  # a free batch: every batch of the range (limited: a wide range is not listed)
            candidates, complete = enumerate_within(
                problem, options=options.space, stop=budget.expired, every_batch=True,
                limit=options.max_evaluations if problem.task.batch_is_free else None)
        except SpaceTooLarge:
            low, high, step = problem.task.batch_range
            return SolveResult(
                solver=self.name, status="UNKNOWN", wall_time_s=time.perf_counter() - start,
                notes=[f"space too large to enumerate: >{options.max_evaluations:,} configurations "
                       f"(max_evaluations; the oracle prices every batch of the range, here "
                       f"{(high - low) // step + 1:,}); cpsat searches only the batches that can be best"],
                stats=state["stats"],
            )
        state["candidates"], state["complete"] = candidates, complete
        stats = state["stats"]
        stats["configurations"] = len(candidates)
        if complete and len(candidates) == 0:
            from solvers.diagnose import explain_empty_space

            return SolveResult(solver=self.name, status="INFEASIBLE", wall_time_s=time.perf_counter() - start,
                               infeasibility=explain_empty_space(problem, options, budget), stats=stats)
        total = count_all_partitions(candidates, problem.model.num_layers, options.max_evaluations,
                                     alignment(problem.model))
        stats["partitions"] = total
        if total > options.max_evaluations:
            return SolveResult(
                solver=self.name, status="UNKNOWN", wall_time_s=time.perf_counter() - start,
                notes=[f"space too large to enumerate: >{options.max_evaluations:,} partitions "
                       f"(max_evaluations)"],
                stats=stats,
            )
        _price_all(problem, candidates, budget, state)
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
        if problem.task.batch_is_free:
            stats["reference_batch"] = problem.task.num_sequences
            if plan.global_batch_size is None:
                plan = plan.model_copy(update={"global_batch_size": problem.task.num_sequences})
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
