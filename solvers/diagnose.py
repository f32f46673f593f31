"""Why no plan exists: the binding constraint family, found with CP-SAT assumptions.

Families:
  memory           every stage of the chosen plan fits in usable memory;
  task constraints the degrees, schedules, ZeRO stages and recompute modes the task allows;
  tp-within-tier   the TP group stays inside one NVLink domain.
The space is re-enumerated without the task constraints and the tier rule; configurations that
break a family are forbidden only while that family's assumption literal holds. CP-SAT's
sufficient assumptions for infeasibility name the families that bind. The memory report then
comes from the plan that overflows least (memory as a soft constraint): which stage, how much
it needs, how much there is, and what to try.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
from ortools.sat.python import cp_model

from planner.core.units import format_bytes
from planner.llm.bounds import CHUNK, memory_lower_bound
from planner.llm.candidates import CandidateSet
from planner.llm.cost.step import evaluate
from planner.llm.plan import check_plan
from planner.llm.problem import Problem
from planner.llm.space import SpaceOptions, enumerate_within
from planner.llm.stage_tables import plan_with_partition, stage_model
from planner.llm.task import Constraints
from solvers.base import SolveOptions
from solvers.budget import Budget, run_cpsat

REMEDIES = (
    "more GPUs or GPUs with more memory",
    "ZeRO-3 / FSDP (shards weights, gradients and optimizer state)",
    "full activation recompute",
    "more pipeline or tensor parallelism",
    "a smaller micro-batch",
)


def explain_empty_space(problem: Problem, options: SolveOptions, budget: Budget | None = None) -> str:
    """No configuration passes the divisibility rules and the task constraints."""
    budget = budget or Budget(math.inf)
    if problem.task.seq_len > problem.model.max_seq_len:
        return (f"seq_len ({problem.task.seq_len}) exceeds the model's max_seq_len "
                f"({problem.model.max_seq_len}); use a shorter sequence")
    relaxed = problem.task.model_copy(update={"constraints": Constraints()})
    relaxed_problem = type(problem)(model=problem.model, cluster=problem.cluster, task=relaxed, source=problem.source)
    pool, complete = enumerate_within(relaxed_problem, options=options.space, stop=budget.expired)
    if len(pool) == 0 and complete:
        return (
            f"no plan divides the problem: {problem.cluster.num_devices} GPUs, {problem.model.num_heads} heads, "
            f"{problem.model.num_layers} layers, {problem.task.batch_text} sequences per step have no "
            "TP x CP x PP x DP split that divides them; change the GPU count or the global batch"
        )
    if len(pool) == 0:
        return ("no plan divides the problem or the task's constraints exclude every plan "
                "(explanation cut short)")
    return "the task's constraints (degree bounds, schedules, ZeRO stages, recompute modes) exclude every plan"


def explain_infeasible(problem: Problem, options: SolveOptions, candidates: CandidateSet, lower,
                       budget: Budget | None = None) -> str:
    """The binding families, with numbers for memory (see module doc).

    The families are tested on the `max_configs` configurations of the relaxed space that need
    the least memory at a balanced split (the ones that would fit first). When `budget` runs
    out first, the families found so far (possibly none) are named.
    """
    budget = budget or Budget(math.inf)
    relaxed_task = problem.task.model_copy(update={"constraints": Constraints()})
    relaxed = type(problem)(model=problem.model, cluster=problem.cluster, task=relaxed_task, source=problem.source)
    space = SpaceOptions(**{**options.space.__dict__, "tp_within_tier": None})
    pool, _ = enumerate_within(relaxed, options=space, stop=budget.expired)
    order = np.argsort(_peaks(relaxed, pool, budget), kind="stable")
    models = _models(relaxed, pool, order, options.max_configs, budget)
    families = _families(problem, options, models, budget)
    allowed = [sm for sm in models if not _violates(problem, options, sm.config)]
    if len(candidates):
        allowed_peak = _peaks(problem, candidates, budget)
        best = np.argsort(allowed_peak, kind="stable")
        allowed = _models(problem, candidates, best, max(1, options.max_configs // 5), budget) + allowed
    if allowed:
        report = _memory_report(problem, allowed, budget)
    else:
        report = "no plan allowed by the task fits in memory"
    relaxations = [f for f in ("task constraints", "tp-within-tier") if f in families]
    if not relaxations:
        return report
    witness = next((sm.config for sm in models if memory_lower_bound(sm) <= sm.capacity_bytes
                    and _violates(problem, options, sm.config)), None)
    names = " and ".join("the task's constraints" if f == "task constraints" else "the rule that TP stays in one NVLink domain"
                         for f in relaxations)
    hint = f" (e.g. {witness.summary()})" if witness is not None else ""
    return f"{report}. Plans that fit exist only outside {names}{hint}: relax them"


def _models(problem: Problem, c: CandidateSet, order, count: int, budget: Budget) -> list:
    """Stage models of the first `count` candidates in `order` small enough for one CP-SAT
    model (solvers.cpsat_model.ROUND_VALUES_MAX in all)."""
    from solvers.cpsat_model import MAX_TABLE_ENTRIES, ROUND_VALUES_MAX, round_values, table_entries

    models, values = [], 0
    for i in order:
        if len(models) >= count or budget.expired():
            break
        config = c.plan(int(i))
        if table_entries(config, problem.model.num_layers) > MAX_TABLE_ENTRIES:
            continue
        sm = stage_model(problem, config)
        size = round_values(sm, math.inf)
        if values + size > ROUND_VALUES_MAX:
            continue
        models.append(sm)
        values += size
    return models


def _peaks(problem: Problem, c: CandidateSet, budget: Budget) -> np.ndarray:
    """Peak memory at the uniform split of the first candidates priced before the budget ends."""
    from planner.llm.candidates import price

    parts = []
    for begin in range(0, len(c), CHUNK):
        if budget.expired():
            break
        parts.append(price(problem, c.take(slice(begin, begin + CHUNK))).peak_memory_bytes)
    return np.concatenate(parts) if parts else np.zeros(0)


def _violates(problem: Problem, options: SolveOptions, plan) -> bool:
    if _violates_task(plan, problem):
        return True
    tier = options.space.tp_within_tier
    if tier is None or plan.tp == 1:
        return False
    stride = 1
    for axis in plan.axis_order:
        if axis == "tp":
            break
        stride *= plan.degree(axis)
    return stride * plan.tp > problem.cluster.tier_size(tier)


def _families(problem: Problem, options: SolveOptions, models, budget: Budget) -> set[str]:
    from solvers.cpsat_model import build_model

    if not models:
        return set()
    built = build_model(models, [0.0] * len(models), None)
    model, configs, a_memory = built.model, built.configs, built.a_memory
    a_task = model.new_bool_var("A_task_constraints")
    a_tier = model.new_bool_var("A_tp_within_tier")
    tier = options.space.tp_within_tier
    for cv in configs:
        plan = cv.sm.config
        if check_plan(plan.model_copy(update={"stage_layers": None}), problem) and _violates_task(plan, problem):
            model.add(cv.x == 0).only_enforce_if(a_task)
        if tier is not None and plan.tp > 1:
            stride = 1
            for axis in plan.axis_order:
                if axis == "tp":
                    break
                stride *= plan.degree(axis)
            if stride * plan.tp > problem.cluster.tier_size(tier):
                model.add(cv.x == 0).only_enforce_if(a_tier)
    names = {a_memory.index: "memory", a_task.index: "task constraints", a_tier.index: "tp-within-tier"}
    literals = {a_memory.index: a_memory, a_task.index: a_task, a_tier.index: a_tier}

    def infeasible(assumed: list) -> list[int] | None:
        model.clear_assumptions()
        model.add_assumptions(assumed)
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        solver.parameters.random_seed = options.seed
        if run_cpsat(solver, model, budget) != cp_model.INFEASIBLE:
            return None
        return list(solver.sufficient_assumptions_for_infeasibility())

    core = infeasible([a_memory, a_task, a_tier])
    if core is None:
        return set()
    # Deletion filter: drop every family the conflict does not need.
    for index in list(core):
        trial = [literals[i] for i in core if i != index]
        if infeasible(trial) is not None:
            core = [i for i in core if i != index]
    return {names[i] for i in core if i in names}


def _violates_task(plan, problem: Problem) -> bool:
    c = problem.task.constraints
    return not (
        all(getattr(c, a).admits(plan.degree(a)) for a in ("tp", "cp", "pp", "dp"))
        and c.ep.admits(plan.ep) and c.etp.admits(plan.etp)
        and c.micro_batch_size.admits(plan.micro_batch_size)
        and plan.schedule in c.schedules
        and plan.zero_stage in c.zero_stages
        and plan.recompute in c.recompute
    )


def _memory_report(problem: Problem, models, budget: Budget | None = None) -> str:
    """The plan that overflows least: minimise the largest stage overflow over the pool (the
    part of it priced before `budget` ends, at least one plan)."""
    best = None
    for sm in models:
        if best is not None and budget is not None and budget.expired():
            break
        chunks = _least_memory_partition(sm)
        recomputed = ([sm.recomputable(i, c) for i, c in enumerate(chunks)] if sm.recompute_full
                      else [0] * sm.num_stages)
        plan = plan_with_partition(sm, chunks, recomputed)
        b = evaluate(problem, plan)
        worst = max(b.stages, key=lambda s: s.memory_bytes - s.capacity_bytes)
        excess = worst.memory_bytes - worst.capacity_bytes
        if best is None or excess < best[0]:
            best = (excess, plan, worst)
    if best is None:
        return "no plan fits in memory"
    excess, plan, stage = best
    cluster = problem.cluster
    return (
        f"no plan fits in memory: the closest, {plan.summary()}, has stage {stage.index} needing "
        f"{format_bytes(stage.memory_bytes)} of {format_bytes(stage.capacity_bytes)} usable on "
        f"{cluster.num_devices} x {cluster.device.name} (over by {format_bytes(excess)}); try "
        + ", ".join(f"({i + 1}) {r}" for i, r in enumerate(REMEDIES))
    )


def _least_memory_partition(sm) -> list[int]:
    """Greedy: give each chunk to the stage whose memory after it is least (ties: the lowest
    stage), kept in a heap."""
    chunks = [sm.min_units(i) for i in range(sm.num_stages)]
    if sm.chunks <= sum(chunks):
        return chunks
    heap = [(float(st.memory_bytes[chunks[i] + 1]), i) for i, st in enumerate(sm.stages)]
    heapq.heapify(heap)
    for _ in range(sm.chunks - sum(chunks)):
        _, i = heapq.heappop(heap)
        chunks[i] += 1
        if chunks[i] + 1 < len(sm.stages[i].memory_bytes):
            heapq.heappush(heap, (float(sm.stages[i].memory_bytes[chunks[i] + 1]), i))
    return chunks

