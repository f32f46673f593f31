"""The plan search space, priced in bulk.

`enumerate_candidates` lists every plan of the declared space that passes the divisibility
rules (uniform stages; the solvers add non-uniform partitions); `price` evaluates thousands
of them at once by running the *same* cost functions as `planner.llm.cost.step.evaluate` on numpy
arrays (one entry per candidate), with the pipeline described by three stage classes: the
first stage, the middle stages (identical) and the last stage.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from planner.llm.cost.layout import AXES, RECOMPUTE_CODES, PlanVars
from planner.llm.cost.step import StageSpec, assemble
from planner.llm.plan import Plan, check_plan
from planner.llm.problem import Problem

AXIS_ORDERS: list[tuple[str, ...]] = [tuple(p) for p in itertools.permutations(("tp", "cp", "dp", "pp"))]
"""All axis orders; candidates refer to one by its index here."""

DEFAULT_ORDER_INDEX = AXIS_ORDERS.index(("tp", "cp", "dp", "pp"))
RECOMPUTE_NAMES = {code: name for name, code in RECOMPUTE_CODES.items()}


@dataclass
class CandidateSet:
    """Decision values of many plans, one numpy entry per candidate (uniform stages)."""

    tp: np.ndarray
    cp: np.ndarray
    pp: np.ndarray
    dp: np.ndarray
    virtual_stages: np.ndarray
    micro_batch_size: np.ndarray
    sp: np.ndarray
    tp_comm_overlap: np.ndarray
    zero_stage: np.ndarray
    recompute: np.ndarray
    axis_order: np.ndarray
    shard_size: np.ndarray

    def __len__(self) -> int:
        return len(self.tp)

    def take(self, index) -> CandidateSet:
        return CandidateSet(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def plan(self, i: int) -> Plan:
        """The i-th candidate as a Plan."""
        return Plan(
            tp=int(self.tp[i]),
            sp=bool(self.sp[i]),
            tp_comm_overlap=bool(self.tp_comm_overlap[i]),
            cp=int(self.cp[i]),
            pp=int(self.pp[i]),
            schedule="interleaved" if self.virtual_stages[i] > 1 else "1f1b",
            virtual_stages=int(self.virtual_stages[i]),
            dp=int(self.dp[i]),
            zero_stage=int(self.zero_stage[i]),
            micro_batch_size=int(self.micro_batch_size[i]),
            recompute=RECOMPUTE_NAMES[int(self.recompute[i])],
            axis_order=list(AXIS_ORDERS[int(self.axis_order[i])]),
            zero_shard_size=int(self.shard_size[i]) if self.shard_size[i] != self.dp[i] else None,
        )

    @classmethod
    def from_plans(cls, plans: list[Plan]) -> CandidateSet:
        def col(getter, dtype=np.int64):
            return np.array([getter(p) for p in plans], dtype=dtype)

        return cls(
            tp=col(lambda p: p.tp),
            cp=col(lambda p: p.cp),
            pp=col(lambda p: p.pp),
            dp=col(lambda p: p.dp),
            virtual_stages=col(lambda p: p.virtual_stages),
            micro_batch_size=col(lambda p: p.micro_batch_size),
            sp=col(lambda p: int(p.sp)),
            tp_comm_overlap=col(lambda p: int(p.tp_comm_overlap)),
            zero_stage=col(lambda p: p.zero_stage),
            recompute=col(lambda p: RECOMPUTE_CODES[p.recompute]),
            axis_order=col(lambda p: AXIS_ORDERS.index(tuple(p.axis_order))),
            shard_size=col(lambda p: p.shard_size if p.zero_stage else p.dp),
        )


@dataclass(frozen=True)
class Priced:
    """Per candidate: predicted step time (s), peak memory per GPU (bytes), fits."""

    step_s: np.ndarray
    peak_memory_bytes: np.ndarray
    fits: np.ndarray


def _strides(c: CandidateSet) -> dict:
    degrees = {"tp": c.tp, "cp": c.cp, "dp": c.dp, "pp": c.pp}
    result = {axis: np.ones(len(c), dtype=float) for axis in AXES}
    for index in np.unique(c.axis_order):
        mask = c.axis_order == index
        stride = np.ones(len(c), dtype=float)
        for axis in AXIS_ORDERS[int(index)]:
            result[axis] = np.where(mask, stride, result[axis])
            stride = stride * degrees[axis]
    return result


def plan_vars(c: CandidateSet) -> PlanVars:
    """The candidates' decisions as cost-model variables (one array entry per candidate)."""
    return PlanVars(
        tp=c.tp,
        cp=c.cp,
        pp=c.pp,
        dp=c.dp,
        virtual_stages=c.virtual_stages,
        micro_batch_size=c.micro_batch_size,
        sp=c.sp,
        tp_comm_overlap=c.tp_comm_overlap,
        zero_stage=c.zero_stage,
        shard_size=np.where(c.zero_stage > 0, c.shard_size, 1),
        recompute=c.recompute,
        strides=_strides(c),
    )


def price(problem: Problem, c: CandidateSet) -> Priced:
    """Prices every candidate with the one cost model (see module doc)."""
    model, task = problem.model, problem.task
    v = plan_vars(c)
    pp = c.pp.astype(float)
    per_stage = model.num_layers / pp
    full = c.recompute == RECOMPUTE_CODES["full"]
    recomputed = np.where(full, per_stage, 0.0)
    single = pp == 1
    specs = [
        StageSpec(index=0, layers=per_stage, recomputed=recomputed, is_first=True, is_last=single, count=1),
        StageSpec(
            index=1, layers=per_stage, recomputed=recomputed, is_first=False, is_last=False,
            count=np.maximum(pp - 2, 0),
        ),
        StageSpec(
            index=pp - 1, layers=per_stage, recomputed=recomputed, is_first=False, is_last=True,
            count=np.where(single, 0, 1),
        ),
    ]
    m = task.num_sequences // (c.dp * c.micro_batch_size)
    a = assemble(problem, v, specs, m)
    capacity = problem.cluster.device.hbm_bytes * (1.0 - task.memory_headroom)
    peak = np.asarray(a.peak_memory_bytes, dtype=float)
    return Priced(step_s=np.asarray(a.step_s, dtype=float), peak_memory_bytes=peak, fits=peak <= capacity)


def price_balanced(problem: Problem, c: CandidateSet) -> Priced:
    """Like `price`, at the balanced split of `planner.llm.stage_tables.balanced_chunks` (stages of
    whole chunks of v layers; the remainder on the middle stages first, then the last stage;
    with two stages, on the first): the split the heuristics use when layers do not divide
    evenly. Needs L % v == 0 and L / v >= pp for every candidate.

    The stages form at most four runs of identical stages (the first; middle stages holding a
    chunk more; the other middle stages; the last), each priced at its first stage (most
    micro-batches in flight, least slack), as `price` does with three.
    """
    model, task = problem.model, problem.task
    v = plan_vars(c)
    pp, vs = c.pp, c.virtual_stages
    base, extra = np.divmod(model.num_layers // vs, pp)
    first_chunks = base + ((pp == 2) & (extra >= 1))
    plus = np.where(pp > 2, np.minimum(extra, np.maximum(pp - 2, 0)), 0)
    rest = np.maximum(pp - 2, 0) - plus
    last_chunks = base + ((pp > 2) & (extra == pp - 1))
    full = c.recompute == RECOMPUTE_CODES["full"]
    single = pp == 1

    def spec(index, chunks, first, last, count):
        layers = (chunks * vs).astype(float)
        return StageSpec(index=np.asarray(index, dtype=float), layers=layers,
                         recomputed=np.where(full, layers, 0.0), is_first=first, is_last=last,
                         count=np.asarray(count, dtype=float))

    no = np.zeros(len(c), dtype=bool)
    specs = [
        spec(np.zeros(len(c)), first_chunks, np.ones(len(c), dtype=bool), single, np.ones(len(c))),
        spec(np.ones(len(c)), base + 1, no, no, plus),
        spec(1 + plus, base, no, no, rest),
        spec(pp - 1, last_chunks, no, np.ones(len(c), dtype=bool), np.where(single, 0, 1)),
    ]
    m = task.num_sequences // (c.dp * c.micro_batch_size)
    a = assemble(problem, v, specs, m)
    capacity = problem.cluster.device.hbm_bytes * (1.0 - task.memory_headroom)
    peak = np.broadcast_to(np.asarray(a.peak_memory_bytes, dtype=float), (len(c),))
    step = np.broadcast_to(np.asarray(a.step_s, dtype=float), (len(c),))
    return Priced(step_s=step, peak_memory_bytes=peak, fits=peak <= capacity)


_SMALL_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


def _is_prime(n: int) -> bool:
    """Miller-Rabin with the first 12 prime bases: deterministic for n < 3.3e24."""
    if n < 2:
        return False
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in _SMALL_PRIMES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _factor_of(n: int) -> int:
    """A non-trivial factor of a composite odd n (Pollard's rho, Brent's cycle finding)."""
    for c in itertools.count(1):
        y, r, q, g = 2, 1, 1, 1
        x = ys = y
        while g == 1:
            x = y
            for _ in range(r):
                y = (y * y + c) % n
            k = 0
            while k < r and g == 1:
                ys = y
                for _ in range(min(128, r - k)):
                    y = (y * y + c) % n
                    q = q * abs(x - y) % n
                g = math.gcd(q, n)
                k += 128
            r *= 2
        if g == n:
            g = 1
            while g == 1:
                ys = (ys * ys + c) % n
                g = math.gcd(abs(x - ys), n)
        if g != n:
            return g
    raise AssertionError("unreachable")


@functools.lru_cache(maxsize=4096)
def factorize(n: int) -> tuple[tuple[int, int], ...]:
    """Prime factorization of n >= 1 as ((prime, exponent), ...), primes ascending.

    Trial division by small primes, then Miller-Rabin and Pollard's rho: milliseconds for any
    64-bit integer (trial division up to n, as before, never returned for a batch of 1e8).
    """
    if n < 1:
        raise ValueError(f"factorize needs n >= 1, got {n}")
    counts: dict[int, int] = {}
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47):
        while n % p == 0:
            counts[p] = counts.get(p, 0) + 1
            n //= p
    stack = [n] if n > 1 else []
    while stack:
        m = stack.pop()
        if _is_prime(m):
            counts[m] = counts.get(m, 0) + 1
            continue
        root = math.isqrt(m)
        if root * root == m:
            stack += [root, root]
            continue
        f = _factor_of(m)
        stack += [f, m // f]
    return tuple(sorted(counts.items()))


def divisors(n: int, limit: int | None = None) -> list[int]:
    """The divisors of n >= 1 (at most `limit` when given), ascending, from its factorization."""
    result = [1]
    for p, e in factorize(n):
        result = [d * p**k for d in result for k in range(e + 1) if limit is None or d * p**k <= limit]
    return sorted(result)


@dataclass(frozen=True)
class SpaceOptions:
    """Which plans the search space declares, beyond the task's own constraints.

    Attributes:
        max_virtual_stages: interleaving depth considered (1 = plain 1F1B only).
        max_micro_batch_size: largest micro-batch considered.
        axis_orders: "megatron" (tp, cp, dp, pp only), "tp-inner" (tp innermost, the other
            three in any order) or "all" (24 orders). Orders that differ only in where
            degree-1 axes sit are the same mapping and are listed once.
        hsdp: also consider ZeRO sharding within a node's worth of DP ranks (replicated across).
        tp_within_tier: the TP group must fit in one domain of this tier (0 = NVLink); None
            lifts the rule.
        tp_comm_overlap: consider TP communication overlap (needs TP > 1).
        non_uniform_stages: pipeline depths whose layers do not split evenly are in the space
            (stages then differ; each holds a multiple of v layers, at least v).
    """

    max_virtual_stages: int = 4
    max_micro_batch_size: int = 16
    axis_orders: str = "tp-inner"
    hsdp: bool = True
    tp_within_tier: int | None = 0
    tp_comm_overlap: bool = True
    non_uniform_stages: bool = True


def _orders(kind: str) -> list[int]:
    if kind == "megatron":
        return [DEFAULT_ORDER_INDEX]
    if kind == "tp-inner":
        return [i for i, order in enumerate(AXIS_ORDERS) if order[0] == "tp"]
    if kind == "all":
        return list(range(len(AXIS_ORDERS)))
    raise ValueError(f"axis_orders must be megatron, tp-inner or all, got {kind!r}")


def enumerate_candidates(
    problem: Problem,
    max_virtual_stages: int = 4,
    axis_orders: list[int] | None = None,
    options: SpaceOptions | None = None,
) -> CandidateSet:
    """Every uniform-stage plan of the declared space that passes `check_plan`.

    Degrees are divisors of the device count; TP also divides the heads; layers divide into
    pp * v chunks; the batch into dp * micro-batch; the task's constraints hold; with
    `options`, the TP group fits its tier and equivalent axis orders are listed once.
    Without `options`, the Megatron axis order (or the given ones) and all micro-batch sizes.
    """
    candidates, _ = enumerate_within(problem, max_virtual_stages, axis_orders, options)
    return candidates


def _product(*columns) -> np.ndarray:
    """Rows of the cartesian product of integer columns, the first varying slowest (the order
    of nested loops)."""
    grids = np.meshgrid(*[np.asarray(col, dtype=np.int64) for col in columns], indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1).reshape(-1, len(columns))


def enumerate_within(
    problem: Problem,
    max_virtual_stages: int = 4,
    axis_orders: list[int] | None = None,
    options: SpaceOptions | None = None,
    stop: Callable[[], bool] | None = None,
    recompute: list[str] | None = None,
) -> tuple[CandidateSet, bool]:
    """`enumerate_candidates` that can stop early: (candidates, complete).

    `stop` is polled once per (TP, CP, PP) triple; when it returns True the configurations
    listed so far are returned with complete=False. `recompute` lists only these of the
    task's recompute modes (same order as filtering afterwards). Divisors come from the factorization of
    the device count and of the batch; the innermost decisions (micro-batch, ZeRO stage,
    recompute, SP/overlap, axis order, shard) are a numpy cartesian product per triple, in
    the order of the nested loops they replace.
    """
    model, task, cluster = problem.model, problem.task, problem.cluster
    c = task.constraints
    n = cluster.num_devices
    num_sequences = task.num_sequences
    if options is not None:
        max_virtual_stages = options.max_virtual_stages
        orders = _orders(options.axis_orders)
    else:
        orders = axis_orders if axis_orders is not None else [DEFAULT_ORDER_INDEX]
    max_mbs = options.max_micro_batch_size if options else num_sequences
    overlap_ok = options is None or options.tp_comm_overlap
    uneven_ok = options is not None and options.non_uniform_stages
    rc_codes = [RECOMPUTE_CODES[rc] for rc in c.recompute if recompute is None or rc in recompute]
    blocks: list[np.ndarray] = []
    complete = True
    tp_degrees = divisors(n) if task.seq_len <= model.max_seq_len else []  # else check_plan fails every plan
    for tp in tp_degrees:
        if model.num_heads % tp or (model.kv_heads % tp and tp % model.kv_heads) or not c.tp.admits(tp):
            continue
        for cp in divisors(n // tp):
            if (cp > 1 and task.seq_len % (2 * cp)) or not c.cp.admits(cp):
                continue
            for pp in divisors(n // (tp * cp)):
                if stop is not None and stop():
                    complete = False
                    break
                if not c.pp.admits(pp):
                    continue
                dp = n // (tp * cp * pp)
                if not c.dp.admits(dp) or num_sequences % dp:
                    continue
                block = _inner_block(problem, options, orders, tp, cp, dp, rc_codes, overlap_ok)
                if len(block) == 0:
                    continue
                batch_divisors = [
                    mbs for mbs in divisors(num_sequences // dp, max_mbs) if c.micro_batch_size.admits(mbs)
                ]
                for vs in range(1, max_virtual_stages + 1):
                    if vs > 1 and pp == 1:
                        continue
                    if model.num_layers % (pp * vs) and not (
                        uneven_ok and model.num_layers % vs == 0 and model.num_layers >= pp * vs
                    ):
                        continue
                    if ("interleaved" if vs > 1 else "1f1b") not in c.schedules:
                        continue
                    sizes = [mbs for mbs in batch_divisors
                             if vs == 1 or (num_sequences // (dp * mbs)) % pp == 0]
                    if not sizes:
                        continue
                    rows = np.empty((len(sizes) * len(block), 12), dtype=np.int64)
                    rows[:, 0:4] = (tp, cp, pp, dp)
                    rows[:, 4] = vs
                    rows[:, 5] = np.repeat(np.asarray(sizes, dtype=np.int64), len(block))
                    rows[:, 6:] = np.tile(block, (len(sizes), 1))
                    blocks.append(rows)
            if not complete:
                break
        if not complete:
            break
    empty = CandidateSet(*(np.zeros(0, dtype=np.int64) for _ in range(12)))
    if not blocks:
        return empty, complete
    if stop is not None and stop():  # no time left even to assemble what was listed
        return empty, False
    data = np.empty((sum(len(b) for b in blocks), 12), dtype=np.int64, order="F")
    np.concatenate(blocks, axis=0, out=data)
    return CandidateSet(*(data[:, i] for i in range(12))), complete  # contiguous columns


def _inner_block(problem, options, orders, tp, cp, dp, rc_codes, overlap_ok) -> np.ndarray:
    """Columns (sp, overlap, zero, recompute, axis order, shard) of one (TP, CP, DP) triple, in
    the order zero > recompute > (sp, overlap) > axis order > shard."""
    cluster, c = problem.cluster, problem.task.constraints
    pp = cluster.num_devices // (tp * cp * dp)
    degrees = {"tp": tp, "cp": cp, "dp": dp, "pp": pp}
    seen = set()
    kept_orders = []
    for order in orders:
        key = tuple(a for a in AXIS_ORDERS[order] if degrees[a] > 1)
        if key in seen:
            continue
        seen.add(key)
        if options is not None and options.tp_within_tier is not None and tp > 1:
            stride = 1
            for axis in AXIS_ORDERS[order]:
                if axis == "tp":
                    break
                stride *= degrees[axis]
            if stride * tp > cluster.tier_size(options.tp_within_tier):
                continue
        kept_orders.append(order)
    shards = [dp]
    if options is not None and options.hsdp:
        local = cluster.tier_size(0) // (tp * cp)
        if 1 < local < dp and dp % local == 0:
            shards.append(local)
    # (SP, TP overlap): Megatron overlaps only the all-gather/reduce-scatter of SP, so no overlap without SP.
    tp_modes = (((0, 0), (1, 0), (1, 1)) if overlap_ok else ((0, 0), (1, 0))) if tp > 1 else ((0, 0),)
    modes = np.asarray(tp_modes, dtype=np.int64)
    parts = []
    for zero in c.zero_stages:
        if zero and dp == 1:
            continue
        grid = _product([zero], rc_codes, range(len(tp_modes)), kept_orders, shards if zero else [dp])
        parts.append(np.column_stack([modes[grid[:, 2]], grid[:, 0], grid[:, 1], grid[:, 3], grid[:, 4]]))
    if not parts:
        return np.zeros((0, 6), dtype=np.int64)
    return np.concatenate(parts)


def check_candidates(problem: Problem, c: CandidateSet, sample: int = 50) -> list[str]:
    """Runs `check_plan` on up to `sample` candidates (a guard used by tests)."""
    problems = []
    for i in np.linspace(0, len(c) - 1, min(sample, len(c))).astype(int):
        problems += check_plan(c.plan(int(i)), problem)
    return problems
