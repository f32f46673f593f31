"""The declared plan space: which configurations the searches consider.

`enumerate_candidates` lists every uniform-stage configuration of the declared space that passes
the divisibility rules (the solvers add non-uniform partitions): degrees that divide the device
count, TP dividing the heads, layers into pp * v chunks, the global batch into dp * micro-batch
(a free batch: `batch_choices`), the task's constraints, and `SpaceOptions` (interleaving depth,
micro-batch sizes, axis orders, HSDP, TP within its tier, TP overlap, non-uniform stages). MoE
models also carry the expert decisions (`expert_choices`). The configurations come back as a
planner.llm.candidates.CandidateSet, priced in bulk there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from planner.core.factorize import divisors
from planner.llm.candidates import AXIS_ORDERS, DEFAULT_ORDER_INDEX, CandidateSet, alignment
from planner.llm.cost.layout import DISPATCHER_CODES, RECOMPUTE_CODES
from planner.llm.plan import check_plan
from planner.llm.problem import Problem


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
    windowed_ring = model.sliding_window is not None and task.framework.facts.cp_comm_type == "p2p"
    for tp in tp_degrees:
        if model.num_heads % tp or (model.kv_heads % tp and tp % model.kv_heads) or not c.tp.admits(tp):
            continue
        for cp in divisors(n // tp):
            if (cp > 1 and task.seq_len % (2 * cp)) or not c.cp.admits(cp):
                continue
            if cp > 1 and windowed_ring:  # Transformer Engine's ring takes no window (plan.check_plan)
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
                    if free and stop is not None and stop():  # a free batch lists many (mbs, batch) pairs
                        complete = False
                        break
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


def _spacing(task, unit: int) -> int:
    """The spacing of the batches a task allows that `unit` divides: lcm(the range's step, unit)."""
    step = task.batch_range[2]
    return step * unit // math.gcd(step, unit)


def largest_batch(task, unit: int) -> int | None:
    """The largest global batch (sequences) the task allows that `unit` (e.g. DP, or DP x
    micro-batch) divides, or None: the batch the rules of thumb (solvers.heuristics) run at."""
    low, high, _ = task.batch_range
    spacing = _spacing(task, unit) if low < high else unit
    largest = high // spacing * spacing
    return largest if largest >= low else None


def batch_count(task, dp: int, mbs: int, pp: int, vs: int, every: bool = False) -> int:
    """len(batch_choices(...)), without building the list (a wide range at `every` holds as
    many batches as the range)."""
    if not every:
        return len(batch_choices(task, dp, mbs, pp, vs))
    low, high, _ = task.batch_range
    unit = dp * mbs * (pp if vs > 1 else 1)
    if low == high:
        return 1 if low % unit == 0 else 0
    spacing = _spacing(task, unit)
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
    low, high, _ = task.batch_range
    unit = dp * mbs * (pp if vs > 1 else 1)
    if low == high:
        return [0] if low % unit == 0 else []
    largest = largest_batch(task, unit)
    if largest is None:
        return []
    spacing = _spacing(task, unit)
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
