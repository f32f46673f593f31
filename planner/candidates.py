"""The plan search space, priced in bulk.

`enumerate_candidates` lists every plan of the declared space that passes the divisibility
rules (uniform stages; the solvers add non-uniform partitions); `price` evaluates thousands
of them at once by running the *same* cost functions as `planner.cost.step.evaluate` on numpy
arrays (one entry per candidate), with the pipeline described by three stage classes: the
first stage, the middle stages (identical) and the last stage.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields

import numpy as np

from planner.cost.layout import AXES, RECOMPUTE_CODES, PlanVars
from planner.cost.step import StageSpec, assemble
from planner.plan import Plan, check_plan
from planner.problem import Problem

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


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


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
    model, task, cluster = problem.model, problem.task, problem.cluster
    c = task.constraints
    n = cluster.num_devices
    if options is not None:
        max_virtual_stages = options.max_virtual_stages
        orders = _orders(options.axis_orders)
    else:
        orders = axis_orders if axis_orders is not None else [DEFAULT_ORDER_INDEX]
    max_mbs = options.max_micro_batch_size if options else task.num_sequences
    rows = []
    for tp in _divisors(n):
        if model.num_heads % tp or (model.kv_heads % tp and tp % model.kv_heads) or not c.tp.admits(tp):
            continue
        for cp in _divisors(n // tp):
            if (cp > 1 and task.seq_len % (2 * cp)) or not c.cp.admits(cp):
                continue
            for pp in _divisors(n // (tp * cp)):
                if not c.pp.admits(pp):
                    continue
                dp = n // (tp * cp * pp)
                if not c.dp.admits(dp) or task.num_sequences % dp:
                    continue
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
                uneven_ok = options is not None and options.non_uniform_stages
                for vs in range(1, max_virtual_stages + 1):
                    if vs > 1 and pp == 1:
                        continue
                    if model.num_layers % (pp * vs) and not (
                        uneven_ok and model.num_layers % vs == 0 and model.num_layers >= pp * vs
                    ):
                        continue
                    schedule = "interleaved" if vs > 1 else "1f1b"
                    if schedule not in c.schedules:
                        continue
                    for mbs in _divisors(task.num_sequences // dp):
                        if mbs > max_mbs or not c.micro_batch_size.admits(mbs):
                            continue
                        m = task.num_sequences // (dp * mbs)
                        if vs > 1 and m % pp:
                            continue
                        for zero in c.zero_stages:
                            if zero and dp == 1:
                                continue
                            for rc in c.recompute:
                                overlap_ok = options is None or options.tp_comm_overlap
                                tp_modes = (
                                    ((0, 0), (1, 0), (1, 1), (0, 1)) if overlap_ok else ((0, 0), (1, 0))
                                ) if tp > 1 else ((0, 0),)
                                for sp, ov in tp_modes:
                                    for order in kept_orders:
                                        for shard in shards if zero else [dp]:
                                            rows.append(
                                                (tp, cp, pp, dp, vs, mbs, sp, ov, zero, RECOMPUTE_CODES[rc], order, shard)
                                            )
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return CandidateSet(*(empty for _ in range(12)))
    data = np.array(rows, dtype=np.int64)
    return CandidateSet(*(data[:, i] for i in range(data.shape[1])))


def check_candidates(problem: Problem, c: CandidateSet, sample: int = 50) -> list[str]:
    """Runs `check_plan` on up to `sample` candidates (a guard used by tests)."""
    problems = []
    for i in np.linspace(0, len(c) - 1, min(sample, len(c))).astype(int):
        problems += check_plan(c.plan(int(i)), problem)
    return problems
