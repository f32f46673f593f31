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

MoE models (Megatron-Core's MoE tuning guidance, ../shared/reference/moe.md): megatron-rules
keeps the expert layers out of TP (ETP 1) and puts EP inside the NVLink domain first (the
largest EP with ep*etp <= GPUs per node), crossing nodes only when memory needs it; the token
dispatcher is alltoall inside a node and flex (DeepEP) when the EP group crosses nodes; EP
overlap where Megatron allows it; TP and PP as small as memory allows (as much DP as fits).
fsdp-only shards everything with ZeRO-3 (no EP). Greedy also moves EP (x2, /2), ETP (1 or TP),
the dispatcher and EP overlap. Stages are the balanced *aligned* split
(planner.llm.stage_tables.aligned_layers) where one exists, so that the plans lie in the exact
search's space.

A task whose global batch is a range: each rule runs at the largest batch of the range its DP
divides (planner.llm.space.largest_batch), and its objective is, like the exact search's, the step
time per the range's largest batch (solvers.cpsat.objective_of); each greedy move takes the
largest batch of the range its shape (DP x micro-batch, x PP interleaved) divides.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

from planner.core.factorize import divisors
from planner.llm.candidates import AXIS_ORDERS
from planner.llm.cost.step import evaluate
from planner.llm.plan import Plan, check_plan
from planner.llm.problem import Problem
from planner.llm.space import _orders, largest_batch
from planner.llm.stage_tables import aligned_layers, balanced_chunks
from solvers.base import SolveOptions, SolveResult
from solvers.budget import Budget, catch_sigint

NAMES = ("megatron-rules", "fsdp-only", "greedy")


def balanced_layers(num_layers: int, pp: int, v: int) -> list[int] | None:
    """Layers per stage, as equal as possible, each a multiple of v (None if impossible)."""
    if num_layers % v or num_layers // v < pp:
        return None
    return [c * v for c in balanced_chunks(num_layers // v, pp)]


def _split(problem: Problem, plan: Plan) -> tuple[Plan | None, list[int] | None]:
    """(the plan with the rules' stage split, the split `price_balanced` prices, or None).

    Dense models: the balanced split when layers do not divide evenly (else the plan's own).
    MoE models: the balanced aligned split where one exists (priced in bulk); else the plan's
    own or the plain balanced split, priced one by one. None: no split exists.
    """
    num_layers, pp, v = problem.model.num_layers, plan.pp, plan.virtual_stages
    if problem.model.family == "moe":
        aligned = aligned_layers(problem.model, pp, v)
        if plan.stage_layers is None and aligned is not None:
            return plan.model_copy(update={"stage_layers": aligned}), aligned
        if aligned is not None:
            return plan, aligned
    balanced = balanced_layers(num_layers, pp, v)
    if plan.stage_layers is None and num_layers % (pp * v):
        if balanced is None:
            return None, None
        plan = plan.model_copy(update={"stage_layers": balanced})
    if problem.model.family == "moe":
        return plan, None
    return plan, balanced


def price(problem: Problem, plan: Plan) -> tuple[float, bool] | None:
    """(step seconds, fits) of a plan, or None if the plan is invalid for the problem.

    A plan with balanced stages (the rules' plans) is priced as runs of identical stages
    (planner.llm.candidates.price_balanced: equal to `evaluate`, in time independent of PP).
    """
    from planner.llm.candidates import CandidateSet, price_balanced

    plan, balanced = _split(problem, plan)
    if plan is None or check_plan(plan, problem):
        return None
    uniform = (plan.stage_layers is None and problem.model.family != "moe") or (
        plan.stage_layers is not None and list(plan.stage_layers) == balanced)
    # Bulk pricing has no column for recompute modules: a plan with its own is priced one by one.
    if uniform and plan.recompute_num_layers is None and plan.recompute_modules is None:
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
    plan = _split(problem, plan)[0] or plan
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
    # The step time per the task's reference batch (the step time itself for a fixed batch).
    objective = b.step_time_s * plan.batch_weight(problem.task) if b is not None else None
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
    if model.family == "moe":
        return _megatron_moe_rules(problem, options, budget)
    n = cluster.num_devices
    tp = min(cluster.tier_size(0), n)
    while tp > 1 and (model.num_heads % tp or n % tp or (model.kv_heads % tp and tp % model.kv_heads)):
        tp //= 2
    zero = 1 if 1 in task.constraints.zero_stages else min(task.constraints.zero_stages)
    for pp in divisors(n // tp, model.num_layers):
        dp = n // (tp * pp)
        sequences = largest_batch(task, dp)
        if sequences is None:
            continue
        m = sequences // dp
        v = 2 if pp > 1 and model.num_layers % (2 * pp) == 0 and m % pp == 0 else 1
        if v > options.space.virtual_limit() or (v > 1 and "interleaved" not in task.constraints.schedules):
            v = 1
        for recompute in ("none", "selective", "full"):
            if recompute not in task.constraints.recompute:
                continue
            if budget.expired():
                return None
            plan = Plan(
                tp=tp, sp=tp > 1, pp=pp, dp=dp, schedule="interleaved" if v > 1 else "1f1b",
                virtual_stages=v, zero_stage=zero if dp > 1 else 0, micro_batch_size=1, recompute=recompute,
                global_batch_size=sequences if task.batch_is_free else None,
            )
            priced = _try_price(problem, plan, budget)
            if priced and priced[1] and _allowed(problem, plan, options):
                return plan
    return None


def _moe_expert_plans(problem: Problem, tp: int, pp: int, v: int, zero: int, recompute: str,
                      sequences: int | None = None):
    """The MoE rule's plans for one (TP, PP, v, recompute), in the order of preference: ETP 1;
    EP from the largest inside the NVLink domain down to 1, then the larger ones that cross
    nodes; alltoall inside a node, flex across; EP overlap where Megatron allows it."""
    model, cluster, c = problem.model, problem.cluster, problem.task.constraints
    n = cluster.num_devices
    dp = n // (tp * pp)
    node = cluster.tier_size(0)
    etp = 1 if c.etp.admits(1) else tp
    eps = [ep for ep in divisors(model.moe.num_experts) if (tp * dp) % (etp * ep) == 0 and c.ep.admits(ep)]
    inside = sorted((ep for ep in eps if ep * etp <= node), reverse=True)
    across = sorted(ep for ep in eps if ep * etp > node)
    for ep in inside + across:
        dispatcher = "alltoall" if ep * etp <= node or etp > 1 else "flex"
        overlap = ep > 1 and recompute != "full" and (pp == 1 or v > 1)
        for ep_overlap in ((True, False) if overlap else (False,)):
            try:
                yield Plan(tp=tp, sp=tp > 1, pp=pp, dp=dp, schedule="interleaved" if v > 1 else "1f1b",
                           virtual_stages=v, zero_stage=zero if dp > 1 else 0, micro_batch_size=1,
                           recompute=recompute, ep=ep, etp=etp, dispatcher=dispatcher,
                           ep_comm_overlap=ep_overlap, axis_order=["tp", "cp", "dp", "pp"],
                           global_batch_size=sequences)
            except ValueError:
                continue


def _megatron_moe_rules(problem: Problem, options: SolveOptions, budget: Budget) -> Plan | None:
    """megatron-rules for MoE models (module doc): the first plan that fits, with the model
    parallelism tp*pp as small as possible (then PP before TP, whose groups stay in a node),
    recompute none, then selective, then full."""
    model, cluster, task = problem.model, problem.cluster, problem.task
    n = cluster.num_devices
    node = min(cluster.tier_size(0), n)
    zero = 1 if 1 in task.constraints.zero_stages else min(task.constraints.zero_stages)
    tps = [tp for tp in divisors(node) if n % tp == 0 and model.num_heads % tp == 0
           and not (model.kv_heads % tp and tp % model.kv_heads)]
    shapes = sorted(((tp, pp) for tp in tps for pp in divisors(n // tp, model.num_layers)
                     if largest_batch(task, n // (tp * pp)) is not None), key=lambda s: (s[0] * s[1], s[0]))
    for tp, pp in shapes:
        sequences = largest_batch(task, n // (tp * pp))
        m = sequences // (n // (tp * pp))
        v = 2 if pp > 1 and aligned_layers(model, pp, 2) is not None and m % pp == 0 else 1
        if v > options.space.virtual_limit() or (v > 1 and "interleaved" not in task.constraints.schedules):
            v = 1
        for recompute in ("none", "selective", "full"):
            if recompute not in task.constraints.recompute:
                continue
            if budget.expired():
                return None
            plans = [p for p in _moe_expert_plans(problem, tp, pp, v, zero, recompute,
                                                  sequences if task.batch_is_free else None)
                     if _allowed(problem, p, options)]
            for plan, priced in zip(plans, _price_all(problem, plans), strict=True):
                if priced and priced[1]:
                    return plan
    return None


def fsdp_only(problem: Problem, options: SolveOptions | None = None,
              budget: Budget | None = None) -> Plan | None:
    n, task = problem.cluster.num_devices, problem.task
    options = options or SolveOptions()
    budget = budget or _unbounded()
    sequences = largest_batch(task, n)
    if sequences is None or 3 not in task.constraints.zero_stages:
        return None
    best: tuple[float, Plan] | None = None
    for recompute in ("none", "selective", "full"):
        if recompute not in task.constraints.recompute:
            continue
        for mbs in divisors(sequences // n, options.space.max_micro_batch_size):
            if budget.expired():
                return best[1] if best else None
            plan = Plan(dp=n, zero_stage=3 if n > 1 else 0, micro_batch_size=mbs, recompute=recompute,
                        global_batch_size=sequences if task.batch_is_free else None)
            priced = _try_price(problem, plan, budget)
            if priced and priced[1] and (best is None or priced[0] < best[0]):
                best = (priced[0], plan)
    return best[1] if best else None


def _neighbours(problem: Problem, plan: Plan, options: SolveOptions):
    n = problem.cluster.num_devices
    moe = problem.model.family == "moe"
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
        if moe:
            data["sp"] = data["tp"] > 1
            if data["etp"] > 1 and data["etp"] != data["tp"]:  # ETP is 1 or TP
                data["etp"] = data["tp"]
            if data["ep"] * data["etp"] == 1:
                data["dispatcher"], data["ep_comm_overlap"] = "alltoall", False
            if data["ep_comm_overlap"] and (data["recompute"] == "full" or (data["pp"] > 1 and data["virtual_stages"] == 1)):
                data["ep_comm_overlap"] = False
            if data["ep"] * data["etp"] > 1 and data["pp"] > 1 and data["axis_order"][-1] != "pp":
                return None
        if problem.task.batch_is_free:  # the largest batch of the range the move's shape divides
            unit = data["dp"] * data["micro_batch_size"] * (data["pp"] if data["virtual_stages"] > 1 else 1)
            data["global_batch_size"] = largest_batch(problem.task, unit)
            if data["global_batch_size"] is None:
                return None
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
        if 1 <= vs <= options.space.virtual_limit():
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
    if moe:
        for ep in (fields["ep"] * 2, fields["ep"] // 2):
            if ep >= 1:
                yield make(ep=ep)
        yield make(etp=fields["tp"] if fields["etp"] == 1 else 1)
        for dispatcher in ("alltoall", "allgather", "flex"):
            if dispatcher != fields["dispatcher"]:
                yield make(dispatcher=dispatcher)
        yield make(ep_comm_overlap=not fields["ep_comm_overlap"])


def _allowed(problem: Problem, plan: Plan, options: SolveOptions) -> bool:
    space = options.space
    if plan.micro_batch_size > space.max_micro_batch_size or plan.virtual_stages > space.virtual_limit():
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
        if priced and priced[1] and priced[0] * plan.batch_weight(problem.task) < best_time:
            best_plan, best_time = plan, priced[0] * plan.batch_weight(problem.task)
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
            # the time per the task's reference batch (the step time for a fixed batch)
            value = priced[0] * candidate.batch_weight(problem.task) if priced else math.inf
            if priced and priced[1] and value < best_time * (1 - 1e-12):
                best_plan, best_time, improved = candidate, value, True
    return best_plan


def _price_all(problem: Problem, plans: list[Plan]) -> list[tuple[float, bool] | None]:
    """`price` of every plan (balanced stages), in one bulk call of the cost model on arrays
    (planner.llm.candidates.price_balanced)."""
    from planner.llm.candidates import CandidateSet, price_balanced

    valid = []
    moe = problem.model.family == "moe"
    results: list[tuple[float, bool] | None] = [None] * len(plans)
    for i, plan in enumerate(plans):
        if moe:
            layers = aligned_layers(problem.model, plan.pp, plan.virtual_stages)
            if layers is None:  # no aligned split: priced one by one
                results[i] = price(problem, plan)
                continue
        else:
            layers = balanced_layers(problem.model.num_layers, plan.pp, plan.virtual_stages)
        if layers is not None and not check_plan(plan.model_copy(update={"stage_layers": layers}), problem):
            valid.append(i)
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
                   budget: Budget | None = None, in_space=None) -> SolveResult | None:
    """The fastest fitting plan among the heuristics (the hint for exact solvers); with
    `in_space`, only plans it accepts (the exact search's declared space)."""
    results = heuristic_results(problem, options, budget or Budget.for_options(options, time.perf_counter()))
    feasible = [r for r in results if r.plan is not None and r.breakdown is not None and r.breakdown.fits
                and (in_space is None or in_space(r.plan))]
    return min(feasible, key=lambda r: r.objective_s) if feasible else None
