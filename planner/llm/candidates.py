"""The plan search space, priced in bulk.

`enumerate_candidates` lists every plan of the declared space that passes the divisibility
rules (uniform stages; the solvers add non-uniform partitions); `price` evaluates thousands
of them at once by running the *same* cost functions as `planner.llm.cost.step.evaluate` on numpy
arrays (one entry per candidate), with the pipeline described by three stage classes: the
first stage, the middle stages (identical) and the last stage.

MoE models (`family: moe`): the expert decisions (EP, ETP, token dispatcher, EP overlap) are
columns of the space like the others (`expert_choices`), and the stage partitions searched are
the *aligned* ones (`Alignment`): with P the period of the MoE layers and v the virtual
stages, every stage holds a multiple of v*P layers (its "units"), and stage 0's first chunk
holds the whole dense prefix. Then stage i holds exactly v*u_i - [i == 0]*K MoE blocks (u_i
units, K = `Alignment.deficit`), an affine function of u_i, so the stage tables stay exact.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from planner.llm.cost.layout import AXES, DISPATCHER_CODES, RECOMPUTE_CODES, PlanVars
from planner.llm.cost.step import StageSpec, assemble
from planner.llm.plan import Plan, check_plan
from planner.llm.problem import Problem

AXIS_ORDERS: list[tuple[str, ...]] = [tuple(p) for p in itertools.permutations(("tp", "cp", "dp", "pp"))]
"""All axis orders; candidates refer to one by its index here."""

DEFAULT_ORDER_INDEX = AXIS_ORDERS.index(("tp", "cp", "dp", "pp"))
RECOMPUTE_NAMES = {code: name for name, code in RECOMPUTE_CODES.items()}
DISPATCHER_NAMES = {code: name for name, code in DISPATCHER_CODES.items()}


@dataclass(frozen=True)
class Alignment:
    """How the solvers cut a model into stages: in *units* of v*P layers (v virtual stages).

    Dense models: P = 1, no MoE blocks. MoE models whose MoE layers are a dense prefix and then
    every P-th layer (layer x is MoE iff x >= s0 and x = s0 mod P; s0 the first MoE layer; this
    covers every `first_dense_layers` k / `moe_every` P model, s0 = k + P - 1, and an explicit
    `layer_pattern` of that shape): the declared space holds the *aligned* partitions, where
    every virtual chunk holds a multiple of P layers (so L/v is a multiple of P) and stage 0's
    first chunk holds all the dense prefix's would-be-MoE positions (u_0 >= K). Every run of
    P consecutive layers starting at a multiple of P then holds exactly one MoE layer, except
    the K = floor(s0 / P) runs inside the dense prefix, all on stage 0:

        moe_layers_i = v * u_i - [i == 0] * K          (exact; tested against layer_mix)

    Attributes:
        period: P (1 for dense models).
        deficit: K, the MoE blocks stage 0 lacks (0 for dense models and prefix-free patterns).
        moe: whether the model has MoE blocks.
    """

    period: int = 1
    deficit: int = 0
    moe: bool = False

    @property
    def min_first_units(self) -> int:
        """The fewest units stage 0 may hold."""
        return max(1, self.deficit)

    def moe_layers(self, units, v, first):
        """MoE blocks of a stage of `units` units (0 for dense models); arrays broadcast."""
        if not self.moe:
            return 0.0 * np.asarray(units, dtype=float)
        return np.asarray(v) * np.asarray(units) - np.where(np.asarray(first, dtype=bool), self.deficit, 0)

    def recomputable(self, units, v, first):
        """Layers a stage may fully recompute: all of them (dense), its MoE blocks (MoE)."""
        if not self.moe:
            return np.asarray(v) * np.asarray(units)
        return self.moe_layers(units, v, first)

    def units(self, num_layers: int, v: int) -> int | None:
        """Units of the whole model at v virtual stages (None: no aligned partition)."""
        if num_layers % v or (num_layers // v) % self.period:
            return None
        return num_layers // v // self.period

    def admits(self, num_layers: int, pp: int, v: int) -> bool:
        """Whether some aligned partition of the layers into pp stages of v chunks exists."""
        units = self.units(num_layers, v)
        return units is not None and units >= pp - 1 + self.min_first_units

    def uniform(self, num_layers: int, pp: int, v: int) -> bool:
        """Whether the uniform split (L/pp layers per stage) is aligned."""
        if num_layers % (pp * v):
            return False
        chunk = num_layers // (pp * v)
        return chunk % self.period == 0 and chunk // self.period >= self.min_first_units

    def aligned(self, layers: list[int], v: int) -> bool:
        """Whether a concrete partition (layers per stage) is aligned."""
        step = v * self.period
        return (all(n % step == 0 and n > 0 for n in layers)
                and layers[0] // step >= self.min_first_units)


def alignment(model) -> Alignment:
    """The model's `Alignment` (see there).

    Raises:
        InputError: an explicit `moe.layer_pattern` that is not a dense prefix followed by every
            P-th layer (the exact search needs that shape; price such a plan with estimate).
    """
    if getattr(model, "family", "dense") != "moe":
        return Alignment()
    kinds = list(model.moe_layers)
    moe_at = [x for x, is_moe in enumerate(kinds) if is_moe]
    first = moe_at[0]
    period = moe_at[1] - moe_at[0] if len(moe_at) > 1 else len(kinds) - first
    expected = [x >= first and (x - first) % period == 0 for x in range(len(kinds))]
    if expected != kinds:
        from planner.core.errors import InputError

        raise InputError(
            f"model.moe.layer_pattern: the solvers search MoE models whose MoE layers are a dense prefix "
            f"followed by every P-th layer (moe.first_dense_layers and moe.moe_every); this pattern "
            f"(MoE layers {moe_at[:8]}{'...' if len(moe_at) > 8 else ''}) is not of that shape. Price a "
            "given plan with `planner estimate TASK --plan PLAN`"
        )
    return Alignment(period=period, deficit=first // period, moe=True)


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
    ep: np.ndarray
    etp: np.ndarray
    dispatcher: np.ndarray
    ep_comm_overlap: np.ndarray
    num_sequences: np.ndarray
    """Global batch in sequences where the task leaves it free; 0 = the task's batch."""

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
            ep=int(self.ep[i]),
            etp=int(self.etp[i]),
            dispatcher=DISPATCHER_NAMES[int(self.dispatcher[i])],
            ep_comm_overlap=bool(self.ep_comm_overlap[i]),
            global_batch_size=int(self.num_sequences[i]) if self.num_sequences[i] > 0 else None,
        )

    def sequences(self, task) -> np.ndarray:
        """Sequences per step of each candidate on `task` (its own batch, else the task's)."""
        return np.where(self.num_sequences > 0, self.num_sequences, task.num_sequences)

    def num_micro_batches(self, task) -> np.ndarray:
        """Micro-batches per step of each candidate."""
        return self.sequences(task) // (self.dp * self.micro_batch_size)

    def batch_weight(self, task) -> np.ndarray:
        """Reference batch / each candidate's batch (`Plan.batch_weight`): 1 for a fixed batch."""
        return task.num_sequences / self.sequences(task).astype(float)

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
            ep=col(lambda p: p.ep),
            etp=col(lambda p: p.etp),
            dispatcher=col(lambda p: DISPATCHER_CODES[p.dispatcher]),
            ep_comm_overlap=col(lambda p: int(p.ep_comm_overlap)),
            num_sequences=col(lambda p: p.global_batch_size or 0),
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
        ep=c.ep,
        etp=c.etp,
        dispatcher=c.dispatcher,
        ep_comm_overlap=c.ep_comm_overlap,
        num_sequences=c.num_sequences,
    )


def price(problem: Problem, c: CandidateSet) -> Priced:
    """Prices every candidate with the one cost model (see module doc), at the uniform split.

    MoE models: each stage's MoE blocks come from `Alignment` (v*u - [first]*K for u = L/(pp*v*P)
    units): exact where the uniform split is aligned (`Alignment.uniform`); otherwise an
    approximation (fractional counts, stage 0's clipped to its layers) used only to order
    candidates, never as a price of a plan.
    """
    model, task = problem.model, problem.task
    v = plan_vars(c)
    pp = c.pp.astype(float)
    per_stage = model.num_layers / pp
    full = c.recompute == RECOMPUTE_CODES["full"]
    single = pp == 1
    align = alignment(model)
    if align.moe:
        units = per_stage / (c.virtual_stages * align.period)
        moe_first = np.clip(align.moe_layers(units, c.virtual_stages, True), 0.0, per_stage)
        moe_other = align.moe_layers(units, c.virtual_stages, False)
        rc_first, rc_other = np.where(full, moe_first, 0.0), np.where(full, moe_other, 0.0)
    else:
        moe_first = moe_other = 0
        rc_first = rc_other = np.where(full, per_stage, 0.0)
    specs = [
        StageSpec(index=0, layers=per_stage, recomputed=rc_first, is_first=True, is_last=single, count=1,
                  moe_layers=moe_first),
        StageSpec(
            index=1, layers=per_stage, recomputed=rc_other, is_first=False, is_last=False,
            count=np.maximum(pp - 2, 0), moe_layers=moe_other,
        ),
        StageSpec(
            index=pp - 1, layers=per_stage, recomputed=rc_other, is_first=False, is_last=True,
            count=np.where(single, 0, 1), moe_layers=moe_other,
        ),
    ]
    m = c.num_micro_batches(task)
    a = assemble(problem, v, specs, m)
    capacity = problem.cluster.device.hbm_bytes * (1.0 - task.memory_headroom)
    peak = np.asarray(a.peak_memory_bytes, dtype=float)
    return Priced(step_s=np.asarray(a.step_s, dtype=float), peak_memory_bytes=peak, fits=peak <= capacity)


def balanced_runs(units, pp, min_first: int = 1):
    """The balanced split of `units` units over pp stages as runs (numpy arrays broadcast):
    (first, middle_high, plus, middle_low, rest, last): stage 0 holds `first` units, `plus`
    middle stages hold `middle_high`, `rest` middle stages `middle_low`, the last stage `last`.

    The remainder goes to the middle stages first, then the last stage; with two stages, to the
    first (planner.llm.stage_tables.balanced_chunks). Where stage 0 would hold fewer than
    `min_first` units (an MoE model's dense prefix, `Alignment.min_first_units`), it holds
    `min_first` and the others share the rest the same way.
    """
    units, pp = np.asarray(units), np.asarray(pp)
    base, extra = np.divmod(units, pp)
    first = base + ((pp == 2) & (extra >= 1))
    plus = np.where(pp > 2, np.minimum(extra, np.maximum(pp - 2, 0)), 0)
    rest = np.maximum(pp - 2, 0) - plus
    last = base + ((pp > 2) & (extra == pp - 1))
    high, low = base + 1, base
    short = (first < min_first) & (pp > 1)
    if np.any(short):
        base2, extra2 = np.divmod(units - min_first, np.maximum(pp - 1, 1))
        first = np.where(short, min_first, first)
        plus = np.where(short, np.where(pp > 2, extra2, 0), plus)
        rest = np.where(short, np.maximum(pp - 2, 0) - plus, rest)
        high, low = np.where(short, base2 + 1, high), np.where(short, base2, low)
        last = np.where(short, np.where(pp > 2, base2, units - min_first), last)
    return first, high, plus, low, rest, last


def price_balanced(problem: Problem, c: CandidateSet) -> Priced:
    """Like `price`, at the balanced split of `planner.llm.stage_tables.balanced_chunks` (stages of
    whole chunks of v layers; the remainder on the middle stages first, then the last stage;
    with two stages, on the first): the split the heuristics use when layers do not divide
    evenly. Needs L % v == 0 and L / v >= pp for every candidate. MoE models: the balanced
    aligned split (`balanced_runs` over units of v*P layers, stage 0 at least
    `Alignment.min_first_units`); needs `Alignment.admits` for every candidate (exact then).

    The stages form at most four runs of identical stages (the first; middle stages holding a
    chunk more; the other middle stages; the last), each priced at its first stage (most
    micro-batches in flight, least slack), as `price` does with three.
    """
    model, task = problem.model, problem.task
    v = plan_vars(c)
    pp, vs = c.pp, c.virtual_stages
    align = alignment(model)
    first_chunks, high, plus, low, rest, last_chunks = balanced_runs(
        model.num_layers // vs // align.period, pp, align.min_first_units)
    full = c.recompute == RECOMPUTE_CODES["full"]
    single = pp == 1

    def spec(index, chunks, first, last, count):
        layers = (chunks * vs * align.period).astype(float)
        moe = align.moe_layers(chunks, vs, first) if align.moe else 0
        recomputable = align.recomputable(chunks, vs, first) if align.moe else layers
        return StageSpec(index=np.asarray(index, dtype=float), layers=layers,
                         recomputed=np.where(full, recomputable, 0.0), is_first=first, is_last=last,
                         count=np.asarray(count, dtype=float), moe_layers=moe)

    no = np.zeros(len(c), dtype=bool)
    specs = [
        spec(np.zeros(len(c)), first_chunks, np.ones(len(c), dtype=bool), single, np.ones(len(c))),
        spec(np.ones(len(c)), high, no, no, plus),
        spec(1 + plus, low, no, no, rest),
        spec(pp - 1, last_chunks, no, np.ones(len(c), dtype=bool), np.where(single, 0, 1)),
    ]
    m = c.num_micro_batches(task)
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
        max_virtual_stages: interleaving depth considered (1 = plain 1F1B only); None: every
            depth up to one layer per model chunk (v <= L / PP), as Megatron allows.
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

    max_virtual_stages: int | None = None
    max_micro_batch_size: int = 16
    axis_orders: str = "tp-inner"
    hsdp: bool = True
    tp_within_tier: int | None = 0
    tp_comm_overlap: bool = True
    non_uniform_stages: bool = True

    def virtual_limit(self) -> int | float:
        """The largest virtual-stage count declared (inf: one layer per chunk)."""
        return math.inf if self.max_virtual_stages is None else self.max_virtual_stages


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
    max_virtual_stages: int | None = 4,
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
    max_virtual_stages: int | None = 4,
    axis_orders: list[int] | None = None,
    options: SpaceOptions | None = None,
    stop: Callable[[], bool] | None = None,
    recompute: list[str] | None = None,
    overlap_recompute: list[str] | None = None,
    counts: dict | None = None,
    every_batch: bool = False,
    limit: int | None = None,
) -> tuple[CandidateSet, bool]:
    """`enumerate_candidates` that can stop early: (candidates, complete).

    A task whose batch is free (a range): each configuration at the batches of
    `batch_choices` (`every_batch`: at every batch of the range it divides; the oracle's space).
    `limit`: raise SpaceTooLarge rather than list more configurations than this (counted
    before any is built, so that a wide range with `every_batch` cannot exhaust time or memory).

    `stop` is polled once per (TP, CP, PP) triple; when it returns True the configurations
    listed so far are returned with complete=False. `recompute` lists only these of the
    task's recompute modes (same order as filtering afterwards); `overlap_recompute`, those
    of configurations with EP overlap (default: the same). `counts`, when given, gets
    "listed": the configurations of every task recompute mode (before those two filters). Divisors come from the factorization of
    the device count and of the batch; the innermost decisions (micro-batch, ZeRO stage,
    recompute, SP/overlap, axis order, shard, expert choices) are a numpy cartesian product per
    triple, in the order of the nested loops they replace.

    MoE models: a (PP, v) pair is in the space when some aligned partition exists
    (`Alignment.admits`; without non-uniform stages, when the uniform split is aligned), and
    each configuration also carries one of `expert_choices`; EP overlap needs recompute other
    than full and, with PP > 1, interleaving; with ep*etp > 1 and PP > 1 the axis order ends
    in pp (`check_plan`).
    """
    model, task, cluster = problem.model, problem.task, problem.cluster
    c = task.constraints
    n = cluster.num_devices
    num_sequences = task.num_sequences
    free = task.batch_is_free
    high = task.batch_range[1]
    align = alignment(model)
    if options is not None:
        max_virtual_stages = options.max_virtual_stages
        orders = _orders(options.axis_orders)
    else:
        orders = axis_orders if axis_orders is not None else [DEFAULT_ORDER_INDEX]
    max_mbs = options.max_micro_batch_size if options else num_sequences
    overlap_ok = options is None or options.tp_comm_overlap
    uneven_ok = options is not None and options.non_uniform_stages
    rc_codes = [RECOMPUTE_CODES[rc] for rc in c.recompute if recompute is None or rc in recompute]
    overlap_codes = rc_codes if overlap_recompute is None else [
        RECOMPUTE_CODES[rc] for rc in c.recompute if rc in overlap_recompute]
    every_code = [RECOMPUTE_CODES[rc] for rc in c.recompute]
    filtered = counts is not None or overlap_codes != rc_codes
    if filtered:  # list every mode, then keep the rows asked for
        asked_codes, rc_codes = rc_codes, every_code
    listed = total = 0
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
                if not c.dp.admits(dp) or (not free and num_sequences % dp) or (free and not batch_choices(
                        task, dp, 1, 1, 1)):
                    continue
                block = _inner_block(problem, options, orders, tp, cp, dp, rc_codes, overlap_ok)
                if len(block) == 0:
                    continue
                if free:
                    batch_divisors = [mbs for mbs in range(1, min(max_mbs, high // dp) + 1)
                                      if c.micro_batch_size.admits(mbs)]
                else:
                    batch_divisors = [
                        mbs for mbs in divisors(num_sequences // dp, max_mbs) if c.micro_batch_size.admits(mbs)
                    ]
                top = model.num_layers // pp if max_virtual_stages is None else max_virtual_stages
                for vs in range(1, top + 1):
                    if vs > 1 and pp == 1:
                        continue
                    if align.moe:
                        if not (align.admits(model.num_layers, pp, vs)
                                and (uneven_ok or align.uniform(model.num_layers, pp, vs))):
                            continue
                    elif model.num_layers % (pp * vs) and not (
                        uneven_ok and model.num_layers % vs == 0 and model.num_layers >= pp * vs
                    ):
                        continue
                    if ("interleaved" if vs > 1 else "1f1b") not in c.schedules:
                        continue
                    batches = sum(batch_count(task, dp, mbs, pp, vs, every_batch) for mbs in batch_divisors)
                    if not batches:
                        continue
                    inner = block
                    mtp = getattr(problem.model, "mtp_layers", 0)
                    # EP overlap with a pipeline needs interleaving; with MTP, at most one
                    # module and a pipeline (Megatron-Core's checks).
                    if (pp > 1 and vs == 1) or mtp > 1 or (mtp == 1 and pp == 1):
                        inner = block[block[:, 9] == 0]
                        if len(inner) == 0:
                            continue
                    if filtered:
                        listed += batches * len(inner)
                        wanted = np.where(inner[:, 9] == 1, np.isin(inner[:, 3], overlap_codes),
                                          np.isin(inner[:, 3], asked_codes))
                        inner = inner[wanted]
                        if len(inner) == 0:
                            continue
                    total += batches * len(inner)
                    if limit is not None and total > limit:
                        raise SpaceTooLarge(f"more than {limit:,} configurations")
                    pairs = [(mbs, batch) for mbs in batch_divisors
                             for batch in batch_choices(task, dp, mbs, pp, vs, every_batch)]
                    rows = np.empty((len(pairs) * len(inner), COLUMNS), dtype=np.int64)
                    rows[:, 0:4] = (tp, cp, pp, dp)
                    rows[:, 4] = vs
                    chosen = np.asarray(pairs, dtype=np.int64)
                    rows[:, 5] = np.repeat(chosen[:, 0], len(inner))
                    rows[:, 6:16] = np.tile(inner, (len(pairs), 1))
                    rows[:, 16] = np.repeat(chosen[:, 1], len(inner))
                    blocks.append(rows)
            if not complete:
                break
        if not complete:
            break
    if counts is not None:
        counts["listed"] = listed
    empty = CandidateSet(*(np.zeros(0, dtype=np.int64) for _ in range(COLUMNS)))
    if not blocks:
        return empty, complete
    if stop is not None and stop():  # no time left even to assemble what was listed
        return empty, False
    data = np.empty((sum(len(b) for b in blocks), COLUMNS), dtype=np.int64, order="F")
    np.concatenate(blocks, axis=0, out=data)
    return CandidateSet(*(data[:, i] for i in range(COLUMNS))), complete  # contiguous columns


COLUMNS = 17
"""Columns of a CandidateSet, in field order."""


def memory_threshold(pp: int, vs: int) -> int:
    """The fewest micro-batches from which every stage keeps as many in flight as it ever does
    (planner.llm.cost.memory.in_flight_micro_batches at stage 0): min(p, m) under 1F1B,
    min(2(p - 1) + (v - 1) p + 1, m v) / v interleaved."""
    if vs == 1:
        return pp
    return -(-(2 * (pp - 1) + (vs - 1) * pp + 1) // vs)


class SpaceTooLarge(Exception):
    """enumerate_within(limit=...) would list more configurations than the limit."""


def batch_count(task, dp: int, mbs: int, pp: int, vs: int, every: bool = False) -> int:
    """len(batch_choices(...)), without building the list (a wide range at `every` holds as
    many batches as the range)."""
    if not every:
        return len(batch_choices(task, dp, mbs, pp, vs))
    low, high, step = task.batch_range
    unit = dp * mbs * (pp if vs > 1 else 1)
    if low == high:
        return 1 if low % unit == 0 else 0
    spacing = step * unit // math.gcd(step, unit)
    return max(0, high // spacing - (low - 1) // spacing)


def batch_choices(task, dp: int, mbs: int, pp: int, vs: int, every: bool = False) -> list[int]:
    """The global batches (sequences) a configuration with these degrees is searched at.

    A fixed batch: [0] (the task's) when dp x micro-batch divides it and, interleaved, the
    micro-batches divide by pp; else []. A free batch (a range: `TrainingTask.batch_range`):
    the largest batch of the range that is a multiple of dp x micro-batch (x pp, interleaved),
    and the smaller such batches whose micro-batch count is below `memory_threshold`.

    Why no other batch can be better (tested against an enumeration of every batch): for one
    plan (partition and recompute fixed) the step time is m T + c, with T the slowest stage's
    micro-batch time and c >= 0 (the pipeline's fill and drain, exposed data-parallel time,
    optimizer) independent of m, so the time per sequence (m T + c) / (m d) falls as m grows
    (with MoE EP overlap T itself falls with m: the unpaired share pp / m of
    planner.llm.cost.moe.unpaired_share);
    and the plan's memory depends on m only through the micro-batches in flight, the same for
    every m from `memory_threshold` on. So a plan at a batch with m at or above the threshold
    fits, and is no slower per sequence, at the largest batch; only below it can a smaller batch
    fit where the largest does not. `every`: every batch of the range the configuration divides
    (the exhaustive oracle's space, which checks this argument).
    """
    low, high, step = task.batch_range
    unit = dp * mbs * (pp if vs > 1 else 1)
    if low == high:
        return [0] if low % unit == 0 else []
    spacing = step * unit // math.gcd(step, unit)
    largest = high // spacing * spacing
    if largest < low:
        return []
    threshold = memory_threshold(pp, vs)
    smaller = []
    batch = -(-low // spacing) * spacing
    while batch < largest and (every or batch // (dp * mbs) < threshold):
        smaller.append(batch)
        batch += spacing
    return [largest, *smaller]


def expert_choices(problem: Problem, tp: int, cp: int, dp: int) -> np.ndarray:
    """Rows (ep, etp, dispatcher code, EP overlap) of one (TP, CP, DP) triple (one row, all
    defaults, for dense models).

    EP over the divisors of the experts with etp*ep dividing tp*cp*dp; ETP 1 or TP (Megatron
    recommends 1; torchtitan supports 1 or TP), dividing the expert width; the task's ep/etp
    constraints. Dispatchers: alltoall, allgather and flex (flex with ETP 1 only). With
    ep = etp = 1 every dispatcher's collectives span one GPU, so all three price the same
    (zero communication): only alltoall is listed (an exact duplicate removed). ETP > 1 is
    left out with expert biases. EP overlap (on and off) needs ep > 1 and a dispatcher other
    than allgather; the recompute, schedule and MTP rules are applied by the caller.
    """
    model, c = problem.model, problem.task.constraints
    if getattr(model, "family", "dense") != "moe":
        return np.zeros((1, 4), dtype=np.int64) + np.array([1, 1, 0, 0], dtype=np.int64)
    moe = model.moe
    world = tp * cp * dp
    rows = []
    for etp in sorted({1, tp}):
        if moe.ffn_hidden_size % etp or world % etp or not c.etp.admits(etp):
            continue
        if etp > 1 and moe.bias:  # Megatron-Core: expert biases need ETP 1
            continue
        for ep in divisors(moe.num_experts):
            if world % (etp * ep) or not c.ep.admits(ep):
                continue
            if ep * etp == 1:
                rows.append((ep, etp, DISPATCHER_CODES["alltoall"], 0))
                continue
            names = ("alltoall", "allgather", "flex") if etp == 1 else ("alltoall", "allgather")
            for name in names:
                rows.append((ep, etp, DISPATCHER_CODES[name], 0))
                if ep > 1 and name != "allgather":
                    rows.append((ep, etp, DISPATCHER_CODES[name], 1))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def _inner_block(problem, options, orders, tp, cp, dp, rc_codes, overlap_ok) -> np.ndarray:
    """Columns (sp, overlap, zero, recompute, axis order, shard, ep, etp, dispatcher, EP
    overlap) of one (TP, CP, DP) triple, in the order zero > recompute > (sp, overlap) > axis
    order > shard > expert choice."""
    cluster, c = problem.cluster, problem.task.constraints
    pp = cluster.num_devices // (tp * cp * dp)
    degrees = {"tp": tp, "cp": cp, "dp": dp, "pp": pp}
    is_moe = getattr(problem.model, "family", "dense") == "moe"
    seen = {}
    kept_orders = []
    for order in orders:
        key = tuple(a for a in AXIS_ORDERS[order] if degrees[a] > 1)
        if key in seen:
            # MoE: the representative of equivalent orders ends in pp where one does (the expert
            # grid needs the pipeline outermost).
            if is_moe and AXIS_ORDERS[order][-1] == "pp" and AXIS_ORDERS[seen[key]][-1] != "pp":
                kept_orders[kept_orders.index(seen[key])] = order
                seen[key] = order
            continue
        if options is not None and options.tp_within_tier is not None and tp > 1:
            stride = 1
            for axis in AXIS_ORDERS[order]:
                if axis == "tp":
                    break
                stride *= degrees[axis]
            if stride * tp > cluster.tier_size(options.tp_within_tier):
                continue
        seen[key] = order
        kept_orders.append(order)
    shards = [dp]
    if options is not None and options.hsdp:
        local = cluster.tier_size(0) // (tp * cp)
        if 1 < local < dp and dp % local == 0:
            shards.append(local)
    # (SP, TP overlap): Megatron overlaps only the all-gather/reduce-scatter of SP, so no overlap without SP.
    tp_modes = (((0, 0), (1, 0), (1, 1)) if overlap_ok else ((0, 0), (1, 0))) if tp > 1 else ((0, 0),)
    if is_moe and tp > 1:  # MoE layers need sequence parallelism with TP (Megatron-Core)
        tp_modes = tuple(mode for mode in tp_modes if mode[0] == 1)
    modes = np.asarray(tp_modes, dtype=np.int64)
    parts = []
    for zero in c.zero_stages:
        if zero and dp == 1:
            continue
        grid = _product([zero], rc_codes, range(len(tp_modes)), kept_orders, shards if zero else [dp])
        parts.append(np.column_stack([modes[grid[:, 2]], grid[:, 0], grid[:, 1], grid[:, 3], grid[:, 4]]))
    if not parts:
        return np.zeros((0, 10), dtype=np.int64)
    base = np.concatenate(parts)
    experts = expert_choices(problem, tp, cp, dp)
    if len(experts) == 0:
        return np.zeros((0, 10), dtype=np.int64)
    block = np.concatenate([np.repeat(base, len(experts), axis=0), np.tile(experts, (len(base), 1))], axis=1)
    if is_moe:
        grid_ok = (block[:, 6] * block[:, 7] == 1) | (pp == 1) | np.isin(
            block[:, 4], [i for i in kept_orders if AXIS_ORDERS[i][-1] == "pp"])
        overlap_rule = (block[:, 9] == 0) | (block[:, 3] != RECOMPUTE_CODES["full"])
        block = block[grid_ok & overlap_rule]
    return block


def check_candidates(problem: Problem, c: CandidateSet, sample: int = 50) -> list[str]:
    """Runs `check_plan` on up to `sample` candidates (a guard used by tests)."""
    problems = []
    for i in np.linspace(0, len(c) - 1, min(sample, len(c))).astype(int):
        problems += check_plan(c.plan(int(i)), problem)
    return problems
