"""The serving search: the configurations of the declared space priced by the cost model
(planner.serving.cost.evaluate), the best kept; exact because every configuration is either
priced or covered by a proven upper bound below the best one found.

The declared space of an inference task on N GPUs:
- tp: divides the GPUs of one node (the cluster's first tier) and N, and passes the plan checks
  (divides the query heads and the FFN width; divides the KV heads or is a multiple of them);
- pp: divides N / tp, at most the model's layers;
- dp = N / (tp pp): every GPU of the task serves (the plan files and `planner estimate` require
  tp x pp x dp = N; an idle GPU would only lower the per-GPU throughput of the same replicas);
- max_num_seqs (sequences a replica runs at once) from pp to the largest useful value: the
  largest batch that fits in memory (planner.serving.memory.max_batch), capped by
  ceil(concurrency / dp) when the task gives a concurrency (a larger value prices the same
  batch) and, with continuous batching, by max_num_batched_tokens (the cost model caps it so);
- max_num_batched_tokens stays at the plan default (8192, the prefill chunk);
- mixture-of-experts models also: ep = 1, or a multiple of tp that divides tp x dp and the
  routed experts (planner.serving.plan: the experts dealt over whole TP groups of ep / tp
  replicas); dp_attention false, and also true for an MLA model with tp > 1 (with tp 1 it prices
  as TP attention: an exact duplicate). A dense model has ep = 1, dp_attention false only, so
  its space is as before.

Feasible: the replica fits in memory, the slowest request kind's TTFT meets targets.ttft_s
and TPOT meets targets.tpot_s. Objective: output tokens/s per GPU, maximised; ties go to the
lower TPOT, then the lower TTFT, then the smaller TP, PP and batch.

The batch is searched by branch and bound, not bisected: throughput per GPU is not monotone in
the batch on the cost model (with a concurrency, ceil(concurrency / dp) and the PP micro-batches
make steps). What is monotone (planner.serving.cost, "Monotone in the batch"; tested on random
instances): with B the batch of a replica, the cost model's throughput per GPU is
    r(B) = n(B) / (N D(B)),  n(B) = min(B dp, concurrency) (B dp without a concurrency),
where D(B) (TPOT with continuous batching; a static batch's time per output token) is
nondecreasing in B, and so are TPOT and TTFT. Hence for every B in lo..hi
    r(B) <= r(lo) n(hi) / n(lo)                                          (the range bound)
and if TPOT(lo) or TTFT(lo) misses its target, so does every B >= lo. The search prices each
layout's smallest and largest batch, then repeatedly takes the range with the highest bound,
prices its middle and splits it; it stops when the highest bound left is below the best
feasible throughput found (times 1 - 1e-9, against rounding): every configuration not priced is
then proven no better, so the status is OPTIMAL with bound = objective, gap 0. Stopped by the
time limit, the bound reported is the highest range bound left (a proven upper bound). With
--pareto a range is also skipped when a priced point that fits and meets the TTFT target has a
lower TPOT than the range's smallest batch and at least its bound's throughput: every point of
the range is dominated, so the front is the one full enumeration gives. Memory is monotone in
the batch (max_batch's bisection relies on that), which is why the batch range stops at the
largest batch that fits.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from dataclasses import dataclass, field

from planner.core.units import format_bytes, format_seconds
from planner.serving.cost import ServingEstimate, evaluate
from planner.serving.memory import max_batch
from planner.serving.plan import ServingPlan, check_plan
from planner.serving.problem import ServingProblem

SOLVER_NAME = "serving-exhaustive"


@dataclass(frozen=True)
class Layout:
    """One replica shape of the declared space and the max_num_seqs values searched for it."""

    tp: int
    pp: int
    dp: int
    ep: int
    dp_attention: bool
    max_batch_fits: int
    """The largest batch per replica that fits (0: not one sequence per micro-batch fits)."""
    batch_cap: int
    """The largest max_num_seqs searched (pp - 1 when none fits: an empty range)."""

    @property
    def size(self) -> int:
        return max(self.batch_cap - self.pp + 1, 0)


@dataclass(frozen=True)
class Priced:
    """A configuration of the space and its price."""

    plan: ServingPlan
    estimate: ServingEstimate

    @property
    def throughput_per_gpu(self) -> float:
        return self.estimate.output_tokens_per_s_per_gpu


@dataclass
class ServingSolveResult:
    """The serving search's answer. status: OPTIMAL (the whole space priced: bound = objective,
    gap 0), FEASIBLE (out of time or interrupted with a plan: `notes` says how much of the space
    was priced; no bound), INFEASIBLE (the whole space priced, no configuration feasible:
    `infeasibility` says which constraint and by how much), UNKNOWN (stopped before a feasible
    configuration was found)."""

    solver: str
    status: str
    best: Priced | None = None
    best_bound_tokens_per_s_per_gpu: float | None = None
    wall_time_s: float = 0.0
    space_size: int = 0
    """Configurations in the declared space."""
    evaluated: int = 0
    """Configurations priced (the rest are covered by the range bound)."""
    layouts: int = 0
    infeasibility: str | None = None
    notes: list[str] = field(default_factory=list)
    pareto: list[Priced] = field(default_factory=list)
    """Output tokens/s per GPU against TPOT over the configurations that fit and meet the TTFT
    target (the TPOT target ignored), by increasing TPOT; filled when asked for."""
    interrupted: bool = False

    @property
    def objective_tokens_per_s_per_gpu(self) -> float | None:
        return self.best.throughput_per_gpu if self.best is not None else None

    @property
    def gap(self) -> float | None:
        objective, bound = self.objective_tokens_per_s_per_gpu, self.best_bound_tokens_per_s_per_gpu
        if objective is None or bound is None or bound <= 0:
            return None
        return max(0.0, (bound - objective) / bound)

    @property
    def plan(self) -> ServingPlan | None:
        return self.best.plan if self.best is not None else None


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def node_size(problem: ServingProblem) -> int:
    """GPUs of one node: the cluster's first (NVLink) tier, at most the task's GPUs."""
    return min(problem.cluster.tier_size(0), problem.cluster.num_devices)


def expert_choices(problem: ServingProblem, tp: int, dp: int) -> list[tuple[int, bool]]:
    """(ep, dp_attention) pairs of the space for a replica of tp GPUs and dp replicas (module
    doc); (1, False) alone for a dense model."""
    model = problem.model
    if model.family != "moe":
        return [(1, False)]
    eps = [1] + [ep for ep in _divisors(tp * dp) if ep > 1 and ep % tp == 0 and model.moe.num_experts % ep == 0]
    # dp_attention with tp 1 is TP 1 attention: the same price, so left out (an exact duplicate)
    attention = [False, True] if model.latent_attention and tp > 1 else [False]
    return [(ep, dpa) for ep in eps for dpa in attention]


def valid_tps(problem: ServingProblem) -> list[int]:
    """TP degrees of the space: divide one node and the task's GPUs, and pass the plan checks
    (for an MoE model, with some ep and dp_attention of the space)."""
    devices = problem.cluster.num_devices
    out = []
    for tp in _divisors(node_size(problem)):
        if devices % tp:
            continue
        dp = devices // tp
        if any(not check_plan(ServingPlan(family="serving", tp=tp, pp=1, dp=dp, ep=ep, dp_attention=dpa), problem)
               for ep, dpa in expert_choices(problem, tp, dp)):
            out.append(tp)
    return out


def layouts(problem: ServingProblem) -> list[Layout]:
    """Every (tp, pp, dp, ep, dp_attention) of the declared space with its batch range."""
    devices = problem.cluster.num_devices
    task = problem.task
    out = []
    for tp in valid_tps(problem):
        for pp in _divisors(devices // tp):
            if pp > problem.model.num_layers:
                continue
            dp = devices // (tp * pp)
            for ep, dpa in expert_choices(problem, tp, dp):
                base = ServingPlan(family="serving", tp=tp, pp=pp, dp=dp, ep=ep, dp_attention=dpa)
                if check_plan(base, problem):
                    continue
                fitting = max_batch(problem, base)
                cap = fitting
                if task.concurrency is not None:
                    cap = min(cap, math.ceil(task.concurrency / dp))
                if task.engine.batching == "continuous":
                    cap = min(cap, base.max_num_batched_tokens)
                if fitting < pp:
                    cap = pp - 1
                out.append(Layout(tp, pp, dp, ep, dpa, fitting, max(cap, pp - 1)))
    return out


def plan_of(layout: Layout, batch: int) -> ServingPlan:
    return ServingPlan(family="serving", tp=layout.tp, pp=layout.pp, dp=layout.dp, ep=layout.ep,
                       dp_attention=layout.dp_attention, max_num_seqs=batch)


def violations(problem: ServingProblem, e: ServingEstimate) -> list[str]:
    """The constraints `e` breaks: memory, ttft, tpot (empty: feasible)."""
    targets = problem.task.targets
    out = []
    if not e.fits:
        out.append("memory")
    if targets.ttft_s is not None and e.ttft_max_s > targets.ttft_s:
        out.append("ttft")
    if targets.tpot_s is not None and e.tpot_s > targets.tpot_s:
        out.append("tpot")
    return out


def _key(p: Priced) -> tuple:
    e, plan = p.estimate, p.plan
    return (-e.output_tokens_per_s_per_gpu, e.tpot_s, e.ttft_max_s, plan.tp, plan.pp, plan.ep, plan.dp_attention,
            plan.max_num_seqs or 0)


def pareto_front(points: list[Priced], key=None) -> list[Priced]:
    """The configurations no other beats on both output tokens/s per GPU (higher) and TPOT
    (lower), one per point of the front, by increasing TPOT; `key` breaks ties (this search's
    order by default)."""
    key = key or _key
    front: list[Priced] = []
    for p in sorted(points, key=lambda p: (p.estimate.tpot_s, key(p))):
        if not front or p.throughput_per_gpu > front[-1].throughput_per_gpu:
            if front and p.estimate.tpot_s == front[-1].estimate.tpot_s:
                front.pop()
            front.append(p)
    return front


def _describe(p: Priced) -> str:
    return f"{p.plan.summary()} ({p.estimate.batch_per_replica:,} sequences per replica)"


def _infeasibility(problem: ServingProblem, space: list[Layout], fitting: list[Priced]) -> str:
    """Why no configuration is feasible: the constraint and by how much."""
    targets = problem.task.targets
    if not fitting:
        # Not one sequence per micro-batch fits on any layout: the closest one, at its smallest batch.
        priced = [(lay, evaluate(problem, plan_of(lay, lay.pp), lay.max_batch_fits)) for lay in space]
        lay, closest = min(priced, key=lambda x: x[1].peak_memory.total_bytes - x[1].peak_memory.capacity_bytes)
        worst = closest.peak_memory
        where = f"TP{lay.tp} PP{lay.pp}" + (f" EP{lay.ep}" if lay.ep > 1 else "") + (" DPattn" if lay.dp_attention
                                                                                      else "")
        return (f"memory: not one sequence per pipeline stage fits on any of the {len(space)} layouts (weights, "
                f"the KV cache of one sequence, workspace and overhead); the closest, {where}, needs "
                f"{format_bytes(worst.total_bytes)} per GPU of {format_bytes(worst.capacity_bytes)} usable (over by "
                f"{format_bytes(worst.total_bytes - worst.capacity_bytes)}); use fp8 weights or KV cache, or more GPUs")
    reasons = []
    if targets.tpot_s is not None:
        fastest = min(fitting, key=lambda p: p.estimate.tpot_s)
        if fastest.estimate.tpot_s > targets.tpot_s:
            reasons.append(f"tpot: the {format_seconds(targets.tpot_s)} TPOT target is unreachable: the fastest decode "
                           f"round of the space is {format_seconds(fastest.estimate.tpot_s)} ({_describe(fastest)}), "
                           f"over by {format_seconds(fastest.estimate.tpot_s - targets.tpot_s)}")
    if targets.ttft_s is not None:
        fastest = min(fitting, key=lambda p: p.estimate.ttft_max_s)
        if fastest.estimate.ttft_max_s > targets.ttft_s:
            reasons.append(f"ttft: the {format_seconds(targets.ttft_s)} TTFT target is unreachable: the fastest first "
                           f"token of the space is {format_seconds(fastest.estimate.ttft_max_s)} "
                           f"({_describe(fastest)}), over by "
                           f"{format_seconds(fastest.estimate.ttft_max_s - targets.ttft_s)}")
    if reasons:
        return "; ".join(reasons)
    meeting_ttft = [p for p in fitting if targets.ttft_s is None or p.estimate.ttft_max_s <= targets.ttft_s]
    fastest = min(meeting_ttft, key=lambda p: p.estimate.tpot_s)
    return (f"ttft and tpot: each target is met by some configuration, never both: among those that meet the "
            f"{format_seconds(targets.ttft_s)} TTFT target the fastest decode round is "
            f"{format_seconds(fastest.estimate.tpot_s)} ({_describe(fastest)}), over the "
            f"{format_seconds(targets.tpot_s)} TPOT target by {format_seconds(fastest.estimate.tpot_s - targets.tpot_s)}")


BOUND_SLACK = 1e-9
"""Relative margin by which a range bound must fall below the incumbent to cut the range
(floating-point rounding of the bound's product)."""


@dataclass(order=True)
class _Range:
    """Batches lo+1 .. hi-1 of a layout, unpriced, between two priced ends (heap order: the
    highest bound first)."""

    priority: float
    order: int
    layout: Layout = field(compare=False)
    lo: int = field(compare=False)
    hi: int = field(compare=False)
    low: Priced = field(compare=False)
    bound: float = field(compare=False)


def _served(problem: ServingProblem, lay: Layout, batch: int) -> float:
    """n(B) of the module doc: requests in flight over all replicas at batch B per replica."""
    total = batch * lay.dp
    return min(total, problem.task.concurrency) if problem.task.concurrency is not None else total


def _range_bound(problem: ServingProblem, lay: Layout, low: Priced, hi: int, tpot_target: bool = True) -> float:
    """Upper bound on throughput per GPU over batches low..hi of the layout (module doc); -inf
    when the smallest batch already misses a latency target (so does every larger one; the TPOT
    target is not applied when `tpot_target` is false: the Pareto front ignores it)."""
    targets = problem.task.targets
    e = low.estimate
    if (tpot_target and targets.tpot_s is not None and e.tpot_s > targets.tpot_s) or (
            targets.ttft_s is not None and e.ttft_max_s > targets.ttft_s):
        return -math.inf
    return e.output_tokens_per_s_per_gpu * _served(problem, lay, hi) / _served(problem, lay, low.plan.max_num_seqs)


def _dominated(front: list[Priced], tpots: list[float], tpot: float, bound: float) -> bool:
    """True when a front point has a lower TPOT than `tpot` and at least `bound` throughput
    (front sorted by TPOT with increasing throughput: the last one below `tpot` is the best)."""
    import bisect

    index = bisect.bisect_left(tpots, tpot) - 1
    return index >= 0 and front[index].throughput_per_gpu >= bound * (1 + BOUND_SLACK)


def solve_serving(problem: ServingProblem, deadline: float | None = None, pareto: bool = False) -> ServingSolveResult:
    """Searches the declared space (module docstring) until `deadline` (time.perf_counter()
    seconds; None: no limit): the best feasible configuration is the optimum."""
    started = time.perf_counter()
    space = layouts(problem)
    size = sum(lay.size for lay in space)
    ttft_target = problem.task.targets.ttft_s
    best: Priced | None = None
    fitting: list[Priced] = []  # fit in memory (infeasibility reasons and the Pareto front)
    eligible: list[Priced] = []  # fit and meet the TTFT target (the Pareto front's points)
    front: list[Priced] = []
    front_tpots: list[float] = []
    front_size = 0
    evaluated = 0
    stopped = interrupted = False
    heap: list[_Range] = []
    counter = itertools.count()
    initialised = False

    def price(lay: Layout, batch: int) -> Priced:
        nonlocal best, evaluated
        plan = plan_of(lay, batch)
        priced = Priced(plan, evaluate(problem, plan, lay.max_batch_fits))
        evaluated += 1
        broken = violations(problem, priced.estimate)
        if "memory" not in broken:
            fitting.append(priced)
            if ttft_target is None or priced.estimate.ttft_max_s <= ttft_target:
                eligible.append(priced)
        if not broken and (best is None or _key(priced) < _key(best)):
            best = priced
        return priced

    def push(lay: Layout, low: Priced, hi: int) -> None:
        if hi - low.plan.max_num_seqs <= 1:
            return  # no batch between the two priced ends
        bound = _range_bound(problem, lay, low, hi - 1, tpot_target=not pareto)
        if bound > -math.inf:
            heapq.heappush(heap, _Range(-bound, next(counter), lay, low.plan.max_num_seqs, hi, low, bound))

    def out_of_time() -> bool:
        return deadline is not None and time.perf_counter() > deadline

    try:
        for lay in space:
            if lay.size == 0:
                continue
            if out_of_time():
                stopped = True
                break
            low = price(lay, lay.pp)
            if lay.batch_cap > lay.pp:
                price(lay, lay.batch_cap)
            push(lay, low, lay.batch_cap)
        initialised = not stopped
        while heap and not stopped:
            top = heap[0]
            if not pareto and best is not None and top.bound * (1 + BOUND_SLACK) < best.throughput_per_gpu:
                break  # every range left is bounded below the incumbent
            if out_of_time():
                stopped = True
                break
            heapq.heappop(heap)
            if pareto:
                if len(eligible) > front_size * 1.25 + 16:
                    front = pareto_front(eligible)
                    front_tpots = [p.estimate.tpot_s for p in front]
                    front_size = len(eligible)
                if _dominated(front, front_tpots, top.low.estimate.tpot_s, top.bound):
                    continue
            mid = (top.lo + top.hi) // 2
            middle = price(top.layout, mid)
            push(top.layout, top.low, mid)
            push(top.layout, middle, top.hi)
    except KeyboardInterrupt:
        interrupted = stopped = True
    result = ServingSolveResult(solver=SOLVER_NAME, status="", best=best, space_size=size, evaluated=evaluated,
                                layouts=len(space), interrupted=interrupted)
    if pareto:
        result.pareto = pareto_front(eligible)
    if not stopped:
        if best is not None:
            result.status = "OPTIMAL"
            result.best_bound_tokens_per_s_per_gpu = best.throughput_per_gpu
        elif not space:
            result.status = "INFEASIBLE"
            result.infeasibility = (f"no layout: no TP degree divides both one node ({node_size(problem)} GPUs) and "
                                    f"the task's {problem.cluster.num_devices} GPUs while dividing the model's heads "
                                    "and FFN width")
        else:
            result.status = "INFEASIBLE"
            result.infeasibility = _infeasibility(problem, space, fitting)
    else:
        result.status = "FEASIBLE" if best is not None else "UNKNOWN"
        share = 100.0 * evaluated / size if size else 100.0
        why = "interrupted" if interrupted else "the time limit was reached"
        if initialised and best is not None:
            bound = max([best.throughput_per_gpu] + [r.bound for r in heap])
            result.best_bound_tokens_per_s_per_gpu = bound
            result.notes.append(f"{why} after pricing {evaluated:,} of the {size:,} configurations ({share:.1f}%); "
                                f"the ranges left are bounded by {bound:,.1f} output tokens/s per GPU")
        else:
            result.notes.append(f"{why} after pricing {evaluated:,} of the {size:,} configurations ({share:.1f}%); "
                                "the rest are not bounded, so the plan is the best found, not proven optimal")
    result.wall_time_s = time.perf_counter() - started
    return result


def baseline_plans(problem: ServingProblem) -> list[tuple[str, ServingPlan | None, str]]:
    """The issue's baselines, as (label, plan or None, why none), with max_num_seqs left to the
    engine (the task's concurrency, or the most that fit):
    - "TP = GPUs per node, one replica per node": tp = the largest TP of the space (one node's
      GPUs when the model's heads allow), pp = 1, dp = GPUs / tp;
    - "smallest TP that fits, most replicas": the smallest TP of the space with which one
      sequence fits in memory at pp = 1, dp = GPUs / tp.
    For an MoE model the first has ep = tp (SGLang's --ep-size equal to --tp-size) and the second
    the widest expert parallelism of the space (vLLM's --enable-expert-parallel: EP = TP x DP
    where the experts divide so, else the largest ep that does); TP attention in both."""
    tps = valid_tps(problem)
    out: list[tuple[str, ServingPlan | None, str]] = []
    if not tps:
        why = "no TP degree of the space"
        return [("tp-per-node", None, why), ("smallest-tp", None, why)]
    tp = tps[-1]
    out.append(("tp-per-node", _baseline(problem, tp), ""))
    for tp in tps:
        plan = _baseline(problem, tp, widest=True)
        if max_batch(problem, plan) >= 1:
            out.append(("smallest-tp", plan, ""))
            break
    else:
        out.append(("smallest-tp", None, "not one sequence fits at pp 1 with any TP of the space"))
    return out


def _baseline(problem: ServingProblem, tp: int, widest: bool = False) -> ServingPlan:
    """A baseline replica of tp GPUs, pp 1, TP attention: for an MoE model the experts over the
    TP group (ep = tp) or, `widest`, the largest ep of the space; ep 1 when none is valid."""
    devices = problem.cluster.num_devices
    plan = ServingPlan(family="serving", tp=tp, pp=1, dp=devices // tp)
    if problem.model.family != "moe":
        return plan
    eps = sorted({ep for ep, _ in expert_choices(problem, tp, devices // tp)}, reverse=True)
    for ep in (eps if widest else [tp]):
        candidate = plan.model_copy(update={"ep": ep})
        if not check_plan(candidate, problem):
            return candidate
    return plan
