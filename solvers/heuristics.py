"""Rules of thumb people use today, behind the solver interface.

- megatron-rules (Narayanan et al. SC'21 sec. 5, the Megatron-LM guidance): TP = GPUs per node,
  halved until it divides the heads; SP with TP; PP the smallest that fits; DP the rest with the
  distributed optimizer (ZeRO-1); interleaving (v = 2) when PP > 1; micro-batch 1; recompute
  none, then selective, then full when memory is tight.
- fsdp-only (MAD-Max's shipped LLM plans): FSDP (ZeRO-3) over all GPUs, no TP/PP/CP; the
  fastest micro-batch and recompute mode that fits.
- greedy: local search from the best of the above over one-knob moves (TP, PP, CP, DP,
  virtual stages, micro-batch, ZeRO, recompute, SP, TP overlap, axis order), with balanced
  stages, until no move improves.
All plans are priced by planner.llm.cost.step.evaluate. Each rule polls its budget (deadline and
Ctrl-C) between plans and returns the best plan found so far when it expires.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

from planner.llm.candidates import AXIS_ORDERS, _orders, divisors
from planner.llm.cost.step import evaluate
from planner.llm.plan import Plan, check_plan
from planner.llm.problem import Problem
from planner.llm.stage_tables import balanced_chunks
from solvers.base import SolveOptions, SolveResult
from solvers.budget import Budget, catch_sigint

NAMES = ("megatron-rules", "fsdp-only", "greedy")


def balanced_layers(num_layers: int, pp: int, v: int) -> list[int] | None:
    """Layers per stage, as equal as possible, each a multiple of v (None if impossible)."""
    if num_layers % v or num_layers // v < pp:
        return None
    return [c * v for c in balanced_chunks(num_layers // v, pp)]


def price(problem: Problem, plan: Plan) -> tuple[float, bool] | None:
    """(step seconds, fits) of a plan, or None if the plan is invalid for the problem.

    A plan with balanced stages (the rules' plans) is priced as runs of identical stages
    (planner.llm.candidates.price_balanced: equal to `evaluate`, in time independent of PP).
    """
    from planner.llm.candidates import CandidateSet, price_balanced

    balanced = balanced_layers(problem.model.num_layers, plan.pp, plan.virtual_stages)
    if plan.stage_layers is None and problem.model.num_layers % (plan.pp * plan.virtual_stages):
        if balanced is None:
            return None
        plan = plan.model_copy(update={"stage_layers": balanced})
    if check_plan(plan, problem):
        return None
    uniform = plan.stage_layers is None or list(plan.stage_layers) == balanced
    if uniform and plan.recompute_num_layers is None:
        priced = price_balanced(problem, CandidateSet.from_plans([plan]))
        return float(priced.step_s[0]), bool(priced.fits[0])
    b = evaluate(problem, plan)
    return b.step_time_s, b.fits


def _unbounded() -> Budget:
    return Budget(math.inf)


def _try_price(problem: Problem, plan: Plan, budget: Budget) -> tuple[float, bool] | None:
    """`price`, or None after Ctrl-C (the budget is then interrupted)."""
    try:
        return price(problem, plan)
    except KeyboardInterrupt:
        budget.interrupt()
        return None


def _finish(name: str, problem: Problem, plan: Plan | None, start: float, budget: Budget,
            options: SolveOptions, note: str = "") -> SolveResult:
    stopped = budget.expired()  # the rule may not have finished
    if plan is None:
        wall = time.perf_counter() - start
        if stopped:
            return SolveResult(solver=name, status="UNKNOWN", wall_time_s=wall, stats={"stopped": True},
                               notes=[budget.out_of_time_note(options.time_limit_s)],
                               interrupted=budget.interrupted)
        return SolveResult(
            solver=name, status="INFEASIBLE", wall_time_s=wall,
            infeasibility=note or f"{name}: no plan of this rule fits in memory", stats={"stopped": False},
        )
    if plan.stage_layers is None and problem.model.num_layers % (plan.pp * plan.virtual_stages):
        plan = plan.model_copy(
            update={"stage_layers": balanced_layers(problem.model.num_layers, plan.pp, plan.virtual_stages)}
        )
    notes = []
    if budget.interrupted:
        notes.append("interrupted: best plan so far")
    elif budget.expired():
        notes.append("time limit: best plan so far")
    try:
        b = evaluate(problem, plan)
    except KeyboardInterrupt:
        budget.interrupt()
        b = None
    wall = time.perf_counter() - start
    objective = b.step_time_s if b is not None else None
    plan = plan.model_copy(
        update={
            "provenance": plan.provenance.model_copy(
                update={"solver": name, "status": "HEURISTIC", "objective_s": objective,
                        "wall_time_s": wall, "problem_hash": problem.hash}
            )
        }
    )
    return SolveResult(solver=name, status="HEURISTIC", plan=plan, objective_s=objective, wall_time_s=wall,
                       breakdown=b, notes=notes, interrupted=budget.interrupted, stats={"stopped": stopped})


def megatron_rules(problem: Problem, options: SolveOptions | None = None,
                   budget: Budget | None = None) -> Plan | None:
    model, cluster, task = problem.model, problem.cluster, problem.task
    options = options or SolveOptions()
    budget = budget or _unbounded()
    n = cluster.num_devices
    tp = min(cluster.tier_size(0), n)
    while tp > 1 and (model.num_heads % tp or n % tp or (model.kv_heads % tp and tp % model.kv_heads)):
        tp //= 2
    zero = 1 if 1 in task.constraints.zero_stages else min(task.constraints.zero_stages)
    for pp in divisors(n // tp, model.num_layers):
        dp = n // (tp * pp)
        if task.num_sequences % dp:
            continue
        m = task.num_sequences // dp
        v = 2 if pp > 1 and model.num_layers % (2 * pp) == 0 and m % pp == 0 else 1
        if v > options.space.max_virtual_stages or (v > 1 and "interleaved" not in task.constraints.schedules):
            v = 1
        for recompute in ("none", "selective", "full"):
            if recompute not in task.constraints.recompute:
                continue
            if budget.expired():
                return None
            plan = Plan(
                tp=tp, sp=tp > 1, pp=pp, dp=dp, schedule="interleaved" if v > 1 else "1f1b",
                virtual_stages=v, zero_stage=zero if dp > 1 else 0, micro_batch_size=1, recompute=recompute,
            )
            priced = _try_price(problem, plan, budget)
            if priced and priced[1] and _allowed(problem, plan, options):
                return plan
    return None


def fsdp_only(problem: Problem, options: SolveOptions | None = None,
              budget: Budget | None = None) -> Plan | None:
    n, task = problem.cluster.num_devices, problem.task
    options = options or SolveOptions()
    budget = budget or _unbounded()
    if task.num_sequences % n or 3 not in task.constraints.zero_stages:
        return None
    best: tuple[float, Plan] | None = None
    for recompute in ("none", "selective", "full"):
        if recompute not in task.constraints.recompute:
            continue
        for mbs in divisors(task.num_sequences // n, options.space.max_micro_batch_size):
            if budget.expired():
                return best[1] if best else None
            plan = Plan(dp=n, zero_stage=3 if n > 1 else 0, micro_batch_size=mbs, recompute=recompute)
            priced = _try_price(problem, plan, budget)
            if priced and priced[1] and (best is None or priced[0] < best[0]):
                best = (priced[0], plan)
    return best[1] if best else None


def _neighbours(problem: Problem, plan: Plan, options: SolveOptions):
    n = problem.cluster.num_devices
    fields = plan.model_dump(exclude={"provenance", "stage_layers", "recompute_num_layers"})

    def make(**update):
        data = dict(fields) | update
        data["dp"] = n // (data["tp"] * data["cp"] * data["pp"]) if n % (data["tp"] * data["cp"] * data["pp"]) == 0 else 0
        if data["dp"] < 1:
            return None
        if data["tp"] == 1:
            data["sp"] = False
            data["tp_comm_overlap"] = False
        if data["pp"] == 1:
            data["schedule"], data["virtual_stages"] = "1f1b", 1
        if data["virtual_stages"] > 1:
            data["schedule"] = "interleaved"
        else:
            data["schedule"] = "1f1b"
        if data["zero_stage"] and data["dp"] == 1:
            data["zero_stage"] = 0
        data["zero_shard_size"] = None
        try:
            return Plan(**data)
        except ValueError:
            return None

    for axis in ("tp", "cp", "pp"):
        for factor in (2, 0.5):
            value = fields[axis] * factor
            if value >= 1 and value == int(value):
                yield make(**{axis: int(value)})
    for mbs in (fields["micro_batch_size"] * 2, fields["micro_batch_size"] // 2):
        if mbs >= 1:
            yield make(micro_batch_size=mbs)
    for vs in (fields["virtual_stages"] + 1, fields["virtual_stages"] - 1):
        if 1 <= vs <= options.space.max_virtual_stages:
            yield make(virtual_stages=vs)
    for zero in (0, 1, 2, 3):
        if zero != fields["zero_stage"]:
            yield make(zero_stage=zero)
    for recompute in ("none", "selective", "full"):
        if recompute != fields["recompute"]:
            yield make(recompute=recompute)
    yield make(sp=not fields["sp"])
    yield make(tp_comm_overlap=not fields["tp_comm_overlap"])
    for index in _orders(options.space.axis_orders):
        if list(AXIS_ORDERS[index]) != fields["axis_order"]:
            yield make(axis_order=list(AXIS_ORDERS[index]))


def _allowed(problem: Problem, plan: Plan, options: SolveOptions) -> bool:
    space = options.space
    if plan.micro_batch_size > space.max_micro_batch_size or plan.virtual_stages > space.max_virtual_stages:
        return False
    if tuple(plan.axis_order) not in [AXIS_ORDERS[i] for i in _orders(space.axis_orders)]:
        return False
    if space.tp_within_tier is not None and plan.tp > 1:
        stride = 1
        for axis in plan.axis_order:
            if axis == "tp":
                break
            stride *= plan.degree(axis)
        if stride * plan.tp > problem.cluster.tier_size(space.tp_within_tier):
            return False
    return True


def greedy(problem: Problem, options: SolveOptions, start_plans: list[Plan],
           budget: Budget | None = None) -> Plan | None:
    budget = budget or _unbounded()
    best_plan, best_time = None, float("inf")
    for plan in start_plans:
        if budget.expired():
            break
        if not _allowed(problem, plan, options):
            continue
        priced = _try_price(problem, plan, budget)
        if priced and priced[1] and priced[0] < best_time:
            best_plan, best_time = plan, priced[0]
    if best_plan is None:
        return None
    improved = True
    while improved and not budget.expired():
        improved = False
        try:
            neighbours = [p for p in _neighbours(problem, best_plan, options)
                          if p is not None and _allowed(problem, p, options)]
            prices = _price_all(problem, neighbours)
        except KeyboardInterrupt:
            budget.interrupt()
            break
        for candidate, priced in zip(neighbours, prices, strict=True):
            if priced and priced[1] and priced[0] < best_time * (1 - 1e-12):
                best_plan, best_time, improved = candidate, priced[0], True
    return best_plan


def _price_all(problem: Problem, plans: list[Plan]) -> list[tuple[float, bool] | None]:
    """`price` of every plan (balanced stages), in one bulk call of the cost model on arrays
    (planner.llm.candidates.price_balanced)."""
    from planner.llm.candidates import CandidateSet, price_balanced

    valid = []
    for i, plan in enumerate(plans):
        layers = balanced_layers(problem.model.num_layers, plan.pp, plan.virtual_stages)
        if layers is not None and not check_plan(plan.model_copy(update={"stage_layers": layers}), problem):
            valid.append(i)
    results: list[tuple[float, bool] | None] = [None] * len(plans)
    if valid:
        priced = price_balanced(problem, CandidateSet.from_plans([plans[i] for i in valid]))
        for j, i in enumerate(valid):
            results[i] = (float(priced.step_s[j]), bool(priced.fits[j]))
    return results


def _known(options: SolveOptions, name: str) -> SolveResult | None:
    """A heuristic's result already computed for this problem (see SolveOptions), unless the
    rule was stopped early (then it is run again if time allows)."""
    for result in options.heuristic_results:
        complete = result.status in ("HEURISTIC", "INFEASIBLE") and not result.stats.get("stopped")
        if result.solver == name and complete:
            return result
    return None


def _start_plan(problem: Problem, options: SolveOptions, name: str, rule, budget: Budget) -> Plan | None:
    known = _known(options, name)
    if known is not None:
        return known.plan.model_copy(update={"provenance": Plan().provenance}) if known.plan else None
    return rule(problem, options, budget)


def _greedy_from_rules(problem: Problem, options: SolveOptions, budget: Budget | None = None) -> Plan | None:
    budget = budget or _unbounded()
    rules = (("megatron-rules", megatron_rules), ("fsdp-only", fsdp_only))
    starts = [_start_plan(problem, options, name, rule, budget) for name, rule in rules]
    starts = [p for p in starts if p is not None]
    n = problem.cluster.num_devices
    starts.append(Plan(tp=1, dp=n, zero_stage=1 if n > 1 else 0,
                       recompute="full" if "full" in problem.task.constraints.recompute else "none"))
    return greedy(problem, options, starts, budget)


class RuleSolver:
    """A rule of thumb behind the Solver interface: its plan, priced, with no bound.

    The rule runs until the options' deadline (or Ctrl-C) and returns its best plan so far.
    """

    exact = False

    def __init__(self, name: str, rule):
        self.name = name
        self.rule = rule

    def solve(self, problem: Problem, options: SolveOptions) -> SolveResult:
        start = time.perf_counter()
        return self.solve_within(problem, options, Budget.for_options(options, start), start)

    def solve_within(self, problem: Problem, options: SolveOptions, budget: Budget,
                     start: float | None = None) -> SolveResult:
        """`solve` under a given budget (a share of a caller's deadline)."""
        start = time.perf_counter() if start is None else start
        with catch_sigint(budget):
            try:
                plan = self.rule(problem, options, budget)
            except KeyboardInterrupt:
                budget.interrupt()
                plan = None
            return _finish(self.name, problem, plan, start, budget, options)


def MegatronRules() -> RuleSolver:  # noqa: N802 (registry constructor)
    return RuleSolver("megatron-rules", megatron_rules)


def FsdpOnly() -> RuleSolver:  # noqa: N802
    return RuleSolver("fsdp-only", fsdp_only)


def Greedy() -> RuleSolver:  # noqa: N802
    return RuleSolver("greedy", _greedy_from_rules)


RULES = {"megatron-rules": MegatronRules, "fsdp-only": FsdpOnly, "greedy": Greedy}


def heuristic_results(problem: Problem, options: SolveOptions, budget: Budget) -> list[SolveResult]:
    """Every heuristic's result, reusing options.heuristic_results; each rule gets an equal
    share of what is left of `budget`, and greedy starts from the other two rules' plans."""
    results: list[SolveResult] = []
    for index, name in enumerate(NAMES):
        known = _known(options, name)
        if known is None:
            share = budget.share(1.0 / (len(NAMES) - index))
            known = RULES[name]().solve_within(problem, options, share)
        results.append(known)
        options = _with_result(options, known)
        if budget.interrupted:
            break
    return results


def _with_result(options: SolveOptions, result: SolveResult) -> SolveOptions:
    others = tuple(r for r in options.heuristic_results if r.solver != result.solver)
    return replace(options, heuristic_results=(*others, result))


def best_heuristic(problem: Problem, options: SolveOptions,
                   budget: Budget | None = None) -> SolveResult | None:
    """The fastest fitting plan among the heuristics (the hint for exact solvers)."""
    results = heuristic_results(problem, options, budget or Budget.for_options(options, time.perf_counter()))
    feasible = [r for r in results if r.plan is not None and r.breakdown is not None and r.breakdown.fits]
    return min(feasible, key=lambda r: r.objective_s) if feasible else None
