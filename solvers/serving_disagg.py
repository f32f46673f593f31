"""The disaggregated serving search: every configuration of a declared space priced by the cost
model (planner.serving.disagg), the best kept; exact over that space because the objective
separates by pool.

The declared space on N GPUs:
- pool sizes: the prefill pool takes P GPUs and the decode pool N - P (both >= 1). When N is
  more than one node (the cluster's first tier), each pool takes whole nodes (P a multiple of
  the node size), as disaggregated deployments place prefill and decode instances on separate
  nodes; inside one node every split is searched;
- each pool's replica shape: the colocated search's layouts over the pool's GPUs
  (solvers.serving.layouts: tp dividing one node and the pool, pp dividing the rest, dp filling
  the pool; ep and dp_attention where the model has experts or latent attention);
- the prefill chunk (max_num_batched_tokens) in PREFILL_CHUNKS;
- the decode batch per replica (max_num_seqs) as a micro-batch m of ceil(B / pp) sequences:
  m = 1, 2, 4, ... (powers of two) and the largest m whose batch fits in memory and meets the
  TPOT target (found by bisection: a decode round never gets shorter as its micro-batch grows),
  each with the largest batch of that micro-batch (m x pp, or the memory limit); with a task
  concurrency the batch is also capped at ceil(concurrency / dp) and that cap is searched.

Why this is exact over the space: the deployment serves min(prefill pool rate, decode pool
rate) requests per second; TTFT and the prefill memory depend on the prefill pool only, TPOT and
the decode memory on the decode pool only. So for each pool size the best prefill configuration
(the highest pool rate meeting the TTFT target and fitting) and the best decode configuration
(likewise with TPOT) are found separately, and the best split is the best of their minimum.
Ties go to the lower TPOT, then the lower TTFT.

Speed: a replica's price depends on its shape, not on dp or the pool size, so prices are cached
across pool sizes; without --pareto, a decode shape (and a batch of it) whose rate bound
dp x batch / ((E[o] - 1) x the shape's shortest round) is below the best decode rate found is
skipped (a round never shortens as the batch grows, which the serving cost's tests check).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from planner.serving.disagg import (
    DecodePrice,
    DisaggregatedPlan,
    PrefillPrice,
    ServingPool,
    combine,
    decode_max_batch,
    decode_steps,
    pool_problem,
    price_decode,
    price_prefill,
)
from planner.serving.memory import stage_memory
from planner.serving.plan import check_plan
from planner.serving.problem import ServingProblem
from solvers.serving import (
    Priced,
    ServingSolveResult,
    _divisors,
    expert_choices,
    node_size,
    pareto_front,
    valid_tps,
)

SOLVER_NAME = "serving-disaggregated"
PREFILL_CHUNKS = (2048, 4096, 8192, 16384)
"""Prefill chunk sizes searched (SGLang's chunked_prefill_size and vLLM's
max_num_batched_tokens are powers of two in this range in their docs and recipes)."""


def pool_sizes(problem: ServingProblem) -> list[int]:
    """Prefill pool sizes of the declared space (module doc)."""
    devices = problem.cluster.num_devices
    node = node_size(problem)
    step = node if devices > node else 1
    return list(range(step, devices, step))


def _shapes(problem: ServingProblem, devices: int) -> list[ServingPool]:
    """Replica shapes of a pool of `devices` GPUs, max_num_seqs unset: the colocated search's
    (solvers.serving.layouts) tp, pp, dp, ep and dp_attention over the pool's GPUs."""
    sub = pool_problem(problem, devices)
    out = []
    for tp in valid_tps(sub):
        for pp in _divisors(devices // tp):
            if pp > problem.model.num_layers:
                continue
            dp = devices // (tp * pp)
            for ep, dpa in expert_choices(sub, tp, dp):
                pool = ServingPool(tp=tp, pp=pp, dp=dp, ep=ep, dp_attention=dpa)
                if not check_plan(pool, sub):
                    out.append(pool)
    return out


def _shape_key(pool: ServingPool) -> tuple:
    """What a replica's price depends on: everything but dp (a replica is priced alone; an
    expert-parallel group spans ep / tp replicas whatever their number)."""
    return (pool.tp, pool.pp, pool.ep, pool.dp_attention, pool.max_num_batched_tokens)


@dataclass(frozen=True)
class PoolChoice:
    """The best configuration of one pool for one pool size."""

    pool: ServingPool
    rate: float
    """Requests per second of the whole pool (decode: at most the concurrency allows)."""
    price: PrefillPrice | DecodePrice
    fitting: int = 0


def best_prefill(problem: ServingProblem, devices: int,
                 cache: dict | None = None) -> tuple[PoolChoice | None, int, dict]:
    """(the best prefill pool on `devices` GPUs or None, configurations priced, why none: the
    closest misses per constraint). `cache`: replica prices by shape (_shape_key), shared
    between pool sizes."""
    target = problem.task.targets.ttft_s
    cache = {} if cache is None else cache
    best, priced, misses = None, 0, {}
    for shape in _shapes(problem, devices):
        for chunk in PREFILL_CHUNKS:
            pool = shape.model_copy(update={"max_num_batched_tokens": chunk})
            key = _shape_key(pool)
            if key not in cache:
                cache[key] = price_prefill(problem, pool)
            price = cache[key]
            priced += 1
            if not all(s.fits for s in price.memory):
                over = max(s.total_bytes - s.capacity_bytes for s in price.memory)
                misses["memory"] = min(misses.get("memory", math.inf), over)
                continue
            if target is not None and price.ttft_max_s > target:
                misses["ttft"] = min(misses.get("ttft", math.inf), price.ttft_max_s - target)
                continue
            rate = pool.dp * price.requests_per_s
            if best is None or (rate, -price.ttft_max_s) > (best.rate, -best.price.ttft_max_s):
                best = PoolChoice(pool, rate, price)
    return best, priced, misses


def _decode_price(problem: ServingProblem, pool: ServingPool, batch: int, cache: dict | None) -> DecodePrice:
    """price_decode of a decode replica whose token budget is its batch, cached by shape and batch."""
    tied = pool.model_copy(update={"max_num_seqs": batch, "max_num_batched_tokens": max(batch, pool.pp)})
    if cache is None:
        return price_decode(problem, tied, batch)
    key = ("decode", _shape_key(pool.model_copy(update={"max_num_batched_tokens": 0})), batch)
    if key not in cache:
        cache[key] = price_decode(problem, tied, batch)
    return cache[key]


def _decode_batches(problem: ServingProblem, pool: ServingPool, fitting: int, cache: dict | None = None) -> list[int]:
    """Decode batches of the declared space for one replica shape (module doc)."""
    cap = fitting
    if problem.task.concurrency is not None:
        cap = min(cap, math.ceil(problem.task.concurrency / pool.dp))
    if cap < pool.pp:
        return []
    top = math.ceil(cap / pool.pp)
    micros = {1 << k for k in range(top.bit_length()) if 1 << k <= top}
    target = problem.task.targets.tpot_s
    if target is not None:  # the largest micro-batch meeting the TPOT target (rounds grow with it)
        low, high = 0, top + 1
        for m in sorted(micros | {top}, reverse=True):  # bracket it between the grid's points, largest first
            if _decode_price(problem, pool, min(m * pool.pp, cap), cache).tpot_s <= target:
                low = m
                break
            high = m
        while high - low > 1:
            mid = (low + high) // 2
            if _decode_price(problem, pool, min(mid * pool.pp, cap), cache).tpot_s <= target:
                low = mid
            else:
                high = mid
        if low:
            micros.add(low)
    micros.add(top)
    return sorted({min(m * pool.pp, cap) for m in micros})


def best_decode(problem: ServingProblem, devices: int, cache: dict | None = None,
                prune: bool = True) -> tuple[PoolChoice | None, int, dict, list[PoolChoice]]:
    """(the best decode pool on `devices` GPUs or None, configurations priced, the closest misses,
    every fitting choice: the Pareto front's points). `cache`: replica prices and batch limits
    by shape, shared between pool sizes. `prune`: skip a replica shape whose rate bound

        dp x (its largest batch) / ((E[o] - 1) x TPOT at its smallest batch)

    (a round never shortens as the batch grows) is below the best rate found; shapes are tried
    in decreasing order of that bound. Off when every fitting choice is wanted (the front)."""
    target = problem.task.targets.tpot_s
    concurrency = problem.task.concurrency
    cache = {} if cache is None else cache
    best, priced, misses, fitting_choices = None, 0, {}, []
    steps = decode_steps(problem)
    ranked = []
    for shape in _shapes(problem, devices):
        key = _shape_key(shape)
        if ("fits", key) not in cache:
            cache[("fits", key)] = decode_max_batch(problem, shape, tied=True)
        fitting = cache[("fits", key)]
        if fitting < shape.pp:
            misses["memory"] = min(misses.get("memory", math.inf), _decode_over(problem, shape))
            continue
        cap = fitting if concurrency is None else min(fitting, math.ceil(concurrency / shape.dp))
        fastest = _decode_price(problem, shape, shape.pp, cache).tpot_s
        bound = shape.dp * max(cap, shape.pp) / (steps * fastest) if steps > 0 else math.inf
        ranked.append((bound, shape, fitting))
    ranked.sort(key=lambda item: -item[0])
    for bound, shape, fitting in ranked:
        if prune and best is not None and bound < best.rate:
            continue
        fastest = _decode_price(problem, shape, shape.pp, cache).tpot_s
        for batch in reversed(_decode_batches(problem, shape, fitting, cache)):
            if prune and best is not None and steps > 0 and shape.dp * batch / (steps * fastest) < best.rate:
                continue  # its rate bound, as the shape's above, at this batch
            pool = shape.model_copy(update={"max_num_seqs": batch, "max_num_batched_tokens": max(batch, shape.pp)})
            price = _decode_price(problem, pool, batch, cache)
            priced += 1
            rate = pool.dp * price.requests_per_s
            if concurrency is not None and concurrency < batch * pool.dp:
                rate *= concurrency / (batch * pool.dp)
            choice = PoolChoice(pool, rate, price, fitting)
            fitting_choices.append(choice)
            if target is not None and price.tpot_s > target:
                misses["tpot"] = min(misses.get("tpot", math.inf), price.tpot_s - target)
                continue
            if best is None or (rate, -price.tpot_s) > (best.rate, -best.price.tpot_s):
                best = choice
    return best, priced, misses, fitting_choices


def _decode_over(problem: ServingProblem, shape: ServingPool) -> float:
    """Bytes by which the fullest GPU of a decode replica of `shape` is over its usable memory
    at its smallest batch (pp sequences, one per stage, the token budget tied to it)."""
    plan = shape.model_copy(update={"max_num_seqs": shape.pp, "max_num_batched_tokens": shape.pp})
    stages = stage_memory(pool_problem(problem, shape.num_devices), plan, shape.pp)
    return max(st.total_bytes - st.capacity_bytes for st in stages)


def _priced(problem: ServingProblem, prefill: PoolChoice, decode: PoolChoice) -> Priced:
    plan = DisaggregatedPlan(family="serving", prefill=prefill.pool, decode=decode.pool)
    estimate = combine(problem, plan, prefill.price, decode.price, decode.fitting)
    return Priced(plan, estimate)  # type: ignore[arg-type]


def _key(p: Priced) -> tuple:
    e = p.estimate
    return (-e.output_tokens_per_s_per_gpu, e.tpot_s, e.ttft_max_s)


def solve_disaggregated(problem: ServingProblem, deadline: float | None = None,
                        pareto: bool = False) -> ServingSolveResult:
    """The best disaggregated deployment of the declared space (module doc) until `deadline`
    (time.perf_counter() seconds; None: no limit)."""
    started = time.perf_counter()
    result = ServingSolveResult(solver=SOLVER_NAME, status="")
    if problem.task.engine.batching != "continuous":
        result.status = "INFEASIBLE"
        result.infeasibility = "disaggregated serving runs continuous batching; the task's engine.batching is static"
        return result
    sizes = pool_sizes(problem)
    best: Priced | None = None
    front_points: list[Priced] = []
    misses: dict[str, float] = {}
    feasible_pools = {"prefill": False, "decode": False}
    by_size: dict[int, tuple[dict | None, dict | None]] = {}
    """Per prefill pool size: (the prefill pool's misses, the decode pool's), None where feasible."""
    prefill_cache: dict = {}
    decode_cache: dict = {}
    stopped = False
    evaluated = 0
    for size in sizes:
        if deadline is not None and time.perf_counter() > deadline:
            stopped = True
            break
        prefill, n_p, miss_p = best_prefill(problem, size, prefill_cache)
        decode, n_d, miss_d, choices = best_decode(problem, problem.cluster.num_devices - size, decode_cache,
                                                   prune=not pareto)
        evaluated += n_p + n_d
        feasible_pools["prefill"] |= prefill is not None
        feasible_pools["decode"] |= decode is not None
        by_size[size] = (None if prefill is not None else miss_p, None if decode is not None else miss_d)
        for pool, found in (("prefill", miss_p), ("decode", miss_d)):
            for name, value in found.items():
                key = (pool, name)
                misses[key] = min(misses.get(key, math.inf), value if isinstance(value, float) else math.inf)
        if prefill is None:
            continue
        if pareto:
            ttft = problem.task.targets.ttft_s
            front_points += [_priced(problem, prefill, c) for c in choices
                             if ttft is None or prefill.price.ttft_max_s <= ttft]
        if decode is None:
            continue
        candidate = _priced(problem, prefill, decode)
        if best is None or _key(candidate) < _key(best):
            best = candidate
    result.best = best
    result.evaluated = evaluated
    result.space_size = evaluated
    result.layouts = len(sizes)
    if pareto:
        result.pareto = pareto_front(front_points, key=_key)
    if stopped:
        result.status = "FEASIBLE" if best is not None else "UNKNOWN"
        result.notes.append(f"the time limit was reached after {evaluated:,} configurations; the pool sizes left "
                            "are not bounded, so " + ("the plan is the best found, not proven optimal"
                                                      if best is not None else "no plan was found: give a longer "
                                                      "--time-limit"))
    elif best is not None:
        result.status = "OPTIMAL"
        result.best_bound_tokens_per_s_per_gpu = best.throughput_per_gpu
    else:
        result.status = "INFEASIBLE"
        result.infeasibility = _why(problem, sizes, misses, feasible_pools, by_size)
    result.notes.append(f"disaggregated: {len(sizes)} prefill/decode splits ({_splits(sizes, problem)}), "
                        f"{evaluated:,} pool configurations priced (prefill chunks {', '.join(map(str, PREFILL_CHUNKS))}; "
                        "decode micro-batches on powers of two and the largest meeting memory and TPOT)")
    result.wall_time_s = time.perf_counter() - started
    return result


def _splits(sizes: list[int], problem: ServingProblem) -> str:
    n = problem.cluster.num_devices
    if not sizes:
        return "none"
    if len(sizes) <= 4:
        return ", ".join(f"{p}:{n - p}" for p in sizes)
    return f"{sizes[0]}:{n - sizes[0]} .. {sizes[-1]}:{n - sizes[-1]}"


def _why(problem: ServingProblem, sizes: list[int], misses: dict[tuple[str, str], float],
         feasible_pools: dict[str, bool], by_size: dict[int, tuple[dict | None, dict | None]] | None = None) -> str:
    """Why no split is feasible: the pool none of whose configurations is, with the closest miss
    per constraint; or that each pool is feasible at some split but never both at one."""
    from planner.core.units import format_bytes, format_seconds

    if not sizes:
        return (f"no split: {problem.cluster.num_devices} GPU(s) cannot hold a prefill pool and a decode pool "
                "(disaggregation needs at least two GPUs, whole nodes each beyond one node)")
    targets = problem.task.targets
    reasons = []
    for pool in ("prefill", "decode"):
        if feasible_pools[pool]:
            continue
        found = {n: v for (p, n), v in misses.items() if p == pool}
        if len(found) > 1:
            found.pop("memory", None)  # some configurations fit and missed a target: that target binds
        for name, value in sorted(found.items()):
            if name == "ttft":
                reasons.append(f"ttft: no prefill pool meets the {format_seconds(targets.ttft_s)} TTFT target (the "
                               f"closest misses it by {format_seconds(value)})")
            elif name == "tpot":
                reasons.append(f"tpot: no decode pool meets the {format_seconds(targets.tpot_s)} TPOT target (the "
                               f"closest misses it by {format_seconds(value)})")
            else:
                reasons.append(f"memory: a {pool} replica does not fit on any split"
                               + (f" (the closest is over by {format_bytes(value)})" if math.isfinite(value) else
                                  " (not one sequence per pipeline stage)"))
    if reasons:
        return "; ".join(reasons)
    text = "no split has both a feasible prefill pool and a feasible decode pool"
    if not by_size:
        return text + " (each is feasible at some split: try more GPUs or looser targets)"
    n = problem.cluster.num_devices

    def missed(found: dict) -> str:
        found = dict(found)
        if len(found) > 1:
            found.pop("memory", None)
        out = []
        for name, value in sorted(found.items()):
            if name == "memory":
                out.append("memory" + (f" (over by {format_bytes(value)})" if math.isfinite(value) else ""))
            else:
                target = targets.ttft_s if name == "ttft" else targets.tpot_s
                out.append(f"the {format_seconds(target)} {name.upper()} target (by {format_seconds(value)})")
        return " and ".join(out) or "no configuration"

    min_p = min(p for p in sizes if by_size.get(p, (0, 0))[0] is None)
    min_d = min(n - p for p in sizes if by_size.get(p, (0, 0))[1] is None)
    need = (f"the prefill pool needs at least {min_p} GPU(s) and the decode pool at least {min_d}, {min_p} + {min_d} "
            f"> the task's {n}" if min_p + min_d > n else "at every split one of the pools misses")
    details = []
    if by_size[min_p][1] is not None:
        details.append(f"with {min_p} prefill GPU(s) the {n - min_p}-GPU decode pool misses {missed(by_size[min_p][1])}")
    if by_size[n - min_d][0] is not None:
        details.append(f"with {min_d} decode GPU(s) the {n - min_d}-GPU prefill pool misses "
                       f"{missed(by_size[n - min_d][0])}")
    return f"{text}: {need}" + (f"; {'; '.join(details)}" if details else "") + "; try more GPUs or looser targets"
