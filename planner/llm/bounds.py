"""Valid lower bounds used to prune configurations before the exact search.

Both bounds are relaxations of the exact per-configuration problem (the stage partition and
per-stage recompute counts), so a configuration whose bound exceeds a known plan's step time,
or the device memory, cannot hold the optimum.

Step time (`time_lower_bound`), for a configuration with p stages, v virtual stages and m
micro-batches: with t_i the stage times,
    T = m max_i t_i + (sum_i t_i - max_i t_i)/v + (DP exposure >= 0) + max_i O_i + sync
      >= (m - 1/v) * S/p + S/v + (sum_i O_i)/p + sync,        S = sum_i t_i
because max_i t_i >= S/p and m >= 1/v. Also max_i t_i >= the smallest stage-kind time at
ceil(C/p) chunks (some stage holds that many; chunks are whole), which is far tighter when
layers do not split evenly (e.g. 126 layers on 32 stages of 3-layer chunks). Every part of t_i is affine in the stage's layer count
except the exposed pipeline send max(hop - a*l, f*hop) (f the SMs the send holds), which is convex; recompute only adds time.
So S >= the sum over stages of t_i at the uniform split l = L/p with no recompute (Jensen), plus
the recompute time of the fewest recomputed layers any fitting partition needs (`_least_recompute`,
an LP relaxation of the per-stage memory limits), and sum_i O_i (affine) equals its value at the
uniform split. Stage 0 has no slack, so the part of its gradient reduction and weight gather
that its own backward/forward cannot hide (and at least the last/first bucket) is added, each
part at its smallest over the admissible layer range. Configurations that cannot fit get +inf.

Memory (`memory_lower_bound`): stage i's peak is affine in its layers, M_i = a_i + d_i c_i
(c_i chunks of v layers), with d_i taken at full recompute when that mode is allowed and the
recompute transient dropped. The smallest max_i M_i over real c_i >= lo_i with sum c_i = C is
at least
    max( max_i (a_i + d_i lo_i),  (C + sum_i a_i/d_i) / sum_i (1/d_i) )
(water-filling); no integer partition does better.

MoE models (the aligned partitions of planner.llm.candidates.Alignment): a stage holds u_i
units of v P layers, v u_i - [i = 0] K of them MoE blocks, and u_0 >= max(1, K). Every part of
t_i is then affine in u_i with the same slope on every stage (each unit holds the same blocks;
stage 0 only adds the constant K (dense - MoE block)), except two:
  - the exposed pipeline send, h(c_i) = 2 v max(hop - c_i / (2 v), f hop) of the stage's block
    compute c_i, convex: stage 0's compute is a unit's times u_0 + delta, others' times u_i, so
    sum_i h >= p h((U + delta) / p) (Jensen on the shifted arguments), attained at the real
    split u_0 = (U + delta)/p - delta, u_i = (U + delta)/p: S is bounded by sum_i t_i there
    (stage 0 possibly at a fictitious unit count, priced by the affine extension);
  - the ZeRO-2/3 first block's collective, the larger of the kinds present: the same on every
    split except where stage 0 holds only dense blocks (v = 1, u_0 = K), where it is smaller.
    There S is bounded separately (stage 0 at K units, the others sharing U - K evenly: they
    have one shape, Jensen) and the smaller of the two bounds is kept.
The busiest-stage bound prices stage 0 at max(ceil(U/p), lo_0) units; stage 0's unhidden DP
traffic is taken at the ends of its range (lo_0 and U - p + 1 units) with its most recompute
(its MoE blocks), and only its floors where an all-dense stage 0 changes the price. The memory
relaxations work per unit with at most v recomputed layers per unit (stage 0's K dense-prefix
blocks never recompute).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields

import numpy as np

from planner.core import kernels
from planner.llm.candidates import Alignment, CandidateSet, alignment, plan_vars
from planner.llm.cost.blocks import block_costs
from planner.llm.cost.edges import edge_cost
from planner.llm.cost.layout import RECOMPUTE_CODES, PlanVars
from planner.llm.cost.memory import in_flight_micro_batches, stage_memory
from planner.llm.cost.step import StageSpec, data_parallel_raw, stage_terms, tied_embedding_sync_s
from planner.llm.problem import Problem
from planner.llm.stage_tables import StageModel

CHUNK = 32_768
"""Configurations bounded per numpy call (keeps memory flat; the deadline is polled between)."""


def time_lower_bound(problem: Problem, c: CandidateSet, upper: float = np.inf) -> np.ndarray:
    """Per candidate, a valid lower bound on the step time of any partition (seconds) times the
    candidate's batch weight (`CandidateSet.batch_weight`: 1 for a fixed batch; with a free
    batch, the bound is on the time of the reference batch at the candidate's rate); +inf where
    no partition fits in memory (see the module doc). The memory part of the bound is only
    computed where the rest of it does not already exceed `upper` (in the same units)."""
    bound, _ = time_lower_bound_within(problem, c, upper)
    return bound


def time_lower_bound_within(
    problem: Problem, c: CandidateSet, upper: float = np.inf, stop: Callable[[], bool] | None = None,
    chunk: int = CHUNK,
) -> tuple[np.ndarray, int]:
    """`time_lower_bound` in chunks of `chunk` configurations, polling `stop` before each (and
    in the memory part): (bounds, number bounded). Configurations not reached keep the trivially
    valid bound 0; those whose memory part was cut short keep the rest of their bound."""
    bound = np.zeros(len(c))
    done = 0
    while done < len(c):
        if stop is not None and stop():
            break
        part = slice(done, min(done + chunk, len(c)))
        bound[part] = _time_lower_bound(problem, c.take(part), upper, stop)
        done = part.stop
    return bound, done


def screened_lower_bound_within(
    problem: Problem, c: CandidateSet, upper: float, improve: Callable[[np.ndarray], float] | None = None,
    stop: Callable[[], bool] | None = None, chunk: int = CHUNK,
) -> tuple[np.ndarray, int]:
    """`time_lower_bound_within` in two passes, so that a better incumbent found from the
    screen makes the second pass cheaper: (bounds, number bounded).

    Pass 1 computes the screen of every configuration, (m - 1/v) S/p + S/v with S the sum of
    stage times at the uniform split (every other part of the step is >= 0: a valid bound on
    its own). `improve(screen)` may then return a smaller incumbent (e.g. the best priced plan
    among the best-screened configurations). Pass 2 computes the full bound of
    `_full_time_lower_bound` only where the screen does not exceed the incumbent; elsewhere the
    screen is the bound. Stopped in pass 1, the configurations not reached keep the bound 0;
    stopped in pass 2, the rest keep their screen (both valid)."""
    screen = np.zeros(len(c))
    done = 0
    while done < len(c):
        if stop is not None and stop():
            return screen, done
        part = slice(done, min(done + chunk, len(c)))
        screen[part] = _screen(problem, c.take(part))
        done = part.stop
    if improve is not None:
        upper = min(upper, improve(screen))
    bound = screen.copy()
    if not np.isfinite(upper):
        keep = np.arange(len(c))
    else:
        keep = np.flatnonzero(screen <= upper)
    for begin in range(0, len(keep), chunk):
        if stop is not None and stop():
            break
        part = keep[begin : begin + chunk]
        bound[part] = np.maximum(screen[part], _full_time_lower_bound(problem, c.take(part), upper, stop))
    return bound, len(c)


def _screen(problem: Problem, c: CandidateSet) -> np.ndarray:
    """The pipeline part of the uniform split alone (see `_time_lower_bound`)."""
    _, _, _, total = _uniform_sum(problem, c, plan_vars(c))
    m = c.num_micro_batches(problem.task).astype(float)
    vs = c.virtual_stages.astype(float)
    return ((m - 1.0 / vs) * (total / c.pp.astype(float)) + total / vs) * c.batch_weight(problem.task)


def _moe_spec(align: Alignment, c: CandidateSet, units, first, last, index=0, count=1, recompute=False):
    """A StageSpec of an MoE model's stage holding `units` units (real; see the module doc);
    `recompute`: its most recompute (all its MoE blocks) under full recompute."""
    vs = c.virtual_stages.astype(float)
    units = np.asarray(units, dtype=float)
    moe = vs * units - (align.deficit if first else 0.0)
    full = c.recompute == RECOMPUTE_CODES["full"]
    recomputed = np.where(full, moe, 0.0) if recompute else np.zeros(len(c))
    return StageSpec(index=index, layers=units * vs * align.period, recomputed=recomputed, is_first=first,
                     is_last=last, count=count, moe_layers=moe)


def _all_dense_edge(align: Alignment, c: CandidateSet) -> np.ndarray:
    """Where stage 0 of an MoE model can hold only dense blocks (v = 1, u_0 = K, PP > 1) and
    that changes its price (the ZeRO-2/3 first block's collective; see the module doc)."""
    vs = c.virtual_stages
    return (vs * align.min_first_units == align.deficit) & (c.pp > 1) & (c.zero_stage >= 2)


def _moe_sum(problem: Problem, c: CandidateSet, v: PlanVars, align: Alignment):
    """`_uniform_sum` of an MoE model: the shifted split (and the all-dense stage 0 split where
    it exists) of the module doc."""
    pp = c.pp.astype(float)
    vs = c.virtual_stages.astype(float)
    single = pp == 1
    units = problem.model.num_layers / (vs * align.period)
    layer = block_costs(problem, v)
    edges = edge_cost(problem, v, layer.tokens)
    dense = layer.dense.compute_fwd_s + layer.dense.compute_bwd_s
    moe = layer.moe.compute_fwd_s + layer.moe.compute_bwd_s
    per_unit = vs * ((align.period - 1) * dense + moe)
    delta = align.deficit * (dense - moe) / per_unit
    even = (units + delta) / pp
    first_units = np.where(single, units, even - delta)

    def total_of(specs):
        terms = [stage_terms(problem, v, layer, edges, s) for s in specs]
        total = sum(np.asarray(s.count, dtype=float) * x.total_s for s, x in zip(specs, terms, strict=True))
        return np.broadcast_to(np.asarray(total, dtype=float), (len(c),))

    def split(first_u, other_u):
        return [
            _moe_spec(align, c, first_u, True, single),
            _moe_spec(align, c, other_u, False, False, index=1, count=np.maximum(pp - 2, 0)),
            _moe_spec(align, c, other_u, False, True, index=pp - 1, count=np.where(single, 0, 1)),
        ]

    specs = split(first_units, even)
    total = total_of(specs)
    lowest = align.min_first_units
    edge = _all_dense_edge(align, c)
    if align.deficit and edge.any():
        rest = (units - lowest) / np.maximum(pp - 1, 1)
        total = np.where(edge, np.minimum(total, total_of(split(np.full(len(c), float(lowest)), rest))), total)
    return specs, layer, edges, total


def _uniform_sum(problem: Problem, c: CandidateSet, v: PlanVars):
    """(stage specs of the uniform split, layer cost, edge cost, S = sum_i t_i at that split);
    for MoE models a valid lower bound on S at any aligned split (module doc)."""
    align = alignment(problem.model)
    if align.moe:
        return _moe_sum(problem, c, v, align)
    pp = c.pp.astype(float)
    per_stage = problem.model.num_layers / pp
    zero = np.zeros(len(c))
    single = pp == 1
    specs = [
        StageSpec(index=0, layers=per_stage, recomputed=zero, is_first=True, is_last=single, count=1),
        StageSpec(index=1, layers=per_stage, recomputed=zero, is_first=False, is_last=False,
                  count=np.maximum(pp - 2, 0)),
        StageSpec(index=pp - 1, layers=per_stage, recomputed=zero, is_first=False, is_last=True,
                  count=np.where(single, 0, 1)),
    ]
    layer = block_costs(problem, v)
    edges = edge_cost(problem, v, layer.tokens)
    terms = [stage_terms(problem, v, layer, edges, s) for s in specs]
    total = sum(np.asarray(s.count, dtype=float) * x.total_s for s, x in zip(specs, terms, strict=True))
    return specs, layer, edges, np.broadcast_to(np.asarray(total, dtype=float), (len(c),))


def _time_lower_bound(problem: Problem, c: CandidateSet, upper: float,
                      stop: Callable[[], bool] | None = None) -> np.ndarray:
    """Screens with the pipeline part alone, (m - 1/v) S/p + S/v (every other part is >= 0),
    and computes the full bound only where that does not already exceed `upper`."""
    if not np.isfinite(upper) or len(c) == 0:
        return _full_time_lower_bound(problem, c, upper, stop)
    screen = _screen(problem, c)
    keep = np.flatnonzero(screen <= upper)
    bound = screen.copy()
    if len(keep):
        bound[keep] = _full_time_lower_bound(problem, c.take(keep), upper, stop)
    return bound


def _full_time_lower_bound(problem: Problem, c: CandidateSet, upper: float,
                           stop: Callable[[], bool] | None = None) -> np.ndarray:
    model, task = problem.model, problem.task
    v = plan_vars(c)
    pp = c.pp.astype(float)
    zero = np.zeros(len(c))
    single = pp == 1
    specs, layer0, edges0, total = _uniform_sum(problem, c, v)
    m = c.num_micro_batches(task).astype(float)
    batch_weight = c.batch_weight(task)
    optimizer_sum = sum(
        np.asarray(s.count, dtype=float) * np.asarray(data_parallel_raw(problem, v, s).optimizer_s, dtype=float)
        for s in specs
    )
    vs = c.virtual_stages.astype(float)
    align = alignment(model)
    # Some stage holds at least ceil(C/p) chunks of v layers; its time is at least the smallest
    # of the three stage kinds' times at that size (times grow with layers).
    kinds = [(True, single), (False, np.zeros(len(c), dtype=bool)), (False, np.ones(len(c), dtype=bool))]
    exists = [np.ones(len(c), dtype=bool), pp > 2, pp > 1]
    tmax_bound = np.full(len(c), np.inf)
    if align.moe:
        busiest_units = np.ceil(model.num_layers / (vs * align.period) / pp)
        for (first, last), ok in zip(kinds, exists, strict=True):
            units = np.maximum(busiest_units, align.min_first_units) if first else busiest_units
            t = stage_terms(problem, v, layer0, edges0, _moe_spec(align, c, units, first, last)).total_s
            tmax_bound = np.where(ok, np.minimum(tmax_bound, t), tmax_bound)
    else:
        chunks = np.ceil(model.num_layers / vs / pp)
        busiest = chunks * vs
        for (first, last), ok in zip(kinds, exists, strict=True):
            t = stage_terms(problem, v, layer0, edges0, StageSpec(0, busiest, zero, first, last)).total_s
            tmax_bound = np.where(ok, np.minimum(tmax_bound, t), tmax_bound)
    tmax_bound = np.maximum(tmax_bound, total / pp)
    weight = (m - 1.0 / vs) / pp + 1.0 / vs

    one = np.ones(len(c))
    with_r = stage_terms(problem, v, layer0, edges0, StageSpec(1, one, one, False, False))
    without_r = stage_terms(problem, v, layer0, edges0, StageSpec(1, one, zero, False, False))
    recompute_s = np.broadcast_to(np.asarray(with_r.backward_s - without_r.backward_s, dtype=float), (len(c),))

    # Stage 0 has no slack: its gradient exposure is max(G - w B, floor) and its weight exposure
    # max(P - w F, floor). G - w B is concave in the stage's layers (B is affine plus a convex
    # send term; recompute only lowers it, so the most recompute is taken), so it is smallest at
    # an end of the admissible layer range. A floor is (1 - f) * bucket + f * G (the never-hidden
    # bucket and the SM share of the overlapped ones, planner.llm.cost.step.DataParallelRaw): the
    # bucket term is unimodal and G affine in the layers, so each is smallest at an end, and the
    # sum of the two minima bounds the floor (the sum itself can dip inside the range). The
    # larger of the part's and the floor's minima is a valid bound.
    low, high = vs, model.num_layers - (pp - 1) * vs
    full = c.recompute == RECOMPUTE_CODES["full"]
    parts = {"grad": [], "grad_last": [], "grad_all": [], "param": [], "param_first": [], "param_all": []}
    if align.moe:
        units = model.num_layers / (vs * align.period)
        ends = [np.full(len(c), float(align.min_first_units)), units - (pp - 1)]
        stage0 = [_moe_spec(align, c, u, True, single, recompute=True) for u in ends]
    else:
        stage0 = [StageSpec(0, n, np.where(full, n, 0.0), True, single) for n in (low, high)]
    for spec in stage0:
        raw = data_parallel_raw(problem, v, spec)
        terms = stage_terms(problem, v, layer0, edges0, spec)
        parts["grad"].append(np.asarray(raw.grad_s - raw.grad_window * terms.backward_s, dtype=float))
        parts["grad_last"].append(np.asarray(raw.grad_last_s, dtype=float))
        parts["grad_all"].append(np.asarray(raw.grad_s, dtype=float))
        parts["param"].append(np.asarray(raw.param_s - raw.param_window * terms.forward_s, dtype=float))
        parts["param_first"].append(np.asarray(raw.param_first_s, dtype=float))
        parts["param_all"].append(np.asarray(raw.param_s, dtype=float))
    smallest = {k: np.minimum.reduce(vals) for k, vals in parts.items()}
    smallest["grad_floor"] = kernels.contended_floor_s(smallest["grad_last"], smallest["grad_all"])
    smallest["param_floor"] = kernels.contended_floor_s(smallest["param_first"], smallest["param_all"])
    if align.moe and align.deficit:
        # Where stage 0 can be all dense (ZeRO-2/3 only), G - w B and P - w F on the rest of the
        # range are those of the mixed composition extended to its low end, which is not
        # priced: only the floors are kept there.
        edge = _all_dense_edge(align, c)
        smallest["grad"] = np.where(edge, -np.inf, smallest["grad"])
        smallest["param"] = np.where(edge, -np.inf, smallest["param"])
    exposure = [np.maximum(np.maximum(smallest["grad"], smallest["grad_floor"]), 0.0),
                np.maximum(np.maximum(smallest["param"], smallest["param_floor"]), 0.0)]
    sync = np.asarray(tied_embedding_sync_s(problem, v))
    bound = ((m - 1.0 / vs) * tmax_bound + total / vs + optimizer_sum / pp + sync
             + exposure[0] + exposure[1])
    bound = np.broadcast_to(np.asarray(bound, dtype=float), (len(c),)) * batch_weight
    open_ = np.flatnonzero(bound <= upper)
    if len(open_):
        sub = c.take(open_)
        least = _least_recompute(problem, sub, plan_vars(sub), m[open_], stop)
        # Stopped: without the memory part (it only adds) the bound is weaker but valid.
        if least is None:
            least = (np.zeros(len(sub)), np.ones(len(sub), dtype=bool))
        layers, feasible = least
        # Recomputed layers add to sum_i t_i; spreading them evenly is the least they can add.
        extra = recompute_s[open_] * layers * np.broadcast_to(weight, (len(c),))[open_]
        extra = np.where(tmax_bound[open_] > total[open_] / pp[open_],
                         recompute_s[open_] * layers / vs[open_], extra)
        bound[open_] = np.where(feasible, bound[open_] + extra * batch_weight[open_], np.inf)
    return bound


def _least_recompute(problem: Problem, c: CandidateSet, v: PlanVars, m,
                     stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(a lower bound on the recomputed layers any fitting partition needs, whether any can fit);
    None if `stop` said so first.

    Stage i's memory is a_i + b_i l_i + d_i r_i (d_i <= 0, full recompute only; the recompute
    transient dropped). It holds tau_i = (cap - a_i)/b_i layers without recompute and at least v
    layers in any case (paying (a_i + b_i v - cap)/|d_i| if v > tau_i); layers beyond
    sum_i max(tau_i, v) cost at least min_i b_i/|d_i| recomputed layers each. Without full
    recompute, such an overflow means no partition fits. (An LP relaxation of the true problem.)
    A configuration also cannot fit if the water-filling bound of `memory_lower_bound` (every
    layer recomputed) exceeds the memory. The middle stages differ only in micro-batches in flight, on which a, b and d are affine
    (planner.llm.cost.memory), so they are priced at two in-flight counts and interpolated.
    """
    model, task = problem.model, problem.task
    capacity = problem.cluster.device.hbm_bytes * (1.0 - task.memory_headroom)
    layer = block_costs(problem, v)
    edges = edge_cost(problem, v, layer.tokens)
    full = c.recompute == RECOMPUTE_CODES["full"]
    pp = c.pp
    vs = c.virtual_stages.astype(float)
    n = len(c)
    zero, one = np.zeros(n), np.ones(n)
    transient = np.where(full, np.asarray(layer.recomputed("activation_none_bytes"), dtype=float), 0.0)
    align = alignment(model)

    def coefficients(index, first, last):
        args = (index, first, last, m, edges.logits_bytes)
        m1 = np.asarray(stage_memory(problem, v, layer, one, zero, *args).total_bytes, dtype=float)
        m11 = np.asarray(stage_memory(problem, v, layer, one, one, *args).total_bytes, dtype=float)
        if align.moe:  # per unit of v P layers (v MoE blocks; stage 0 K fewer), affine extension at 0
            prefix = -align.deficit * np.asarray(first, dtype=float)
            a = np.asarray(stage_memory(problem, v, layer, zero, zero, *args, prefix).total_bytes, dtype=float)
            unit = np.asarray(stage_memory(problem, v, layer, vs * align.period, zero, *args,
                                           vs + prefix).total_bytes, dtype=float)
            b = np.maximum(unit - a, 1e-9)
        else:
            a = np.asarray(stage_memory(problem, v, layer, zero, zero, *args).total_bytes, dtype=float)
            b = np.maximum(m1 - a, 1e-9)
        d = np.where(full, np.minimum(m11 - m1 - transient, 0.0), 0.0)
        return a, b, d

    no = np.zeros(n, dtype=bool)
    high_index, low_index = np.zeros(n), pp - 1.0
    f_high = in_flight_micro_batches(v, high_index, m)
    f_low = in_flight_micro_batches(v, low_index, m)
    hi_c = coefficients(high_index, no, no)
    lo_c = coefficients(low_index, no, no)
    span = np.where(f_high != f_low, f_high - f_low, 1.0)
    slopes = [(h - lo) / span for h, lo in zip(hi_c, lo_c, strict=True)]
    first_c = coefficients(zero, np.ones(n, dtype=bool), pp == 1)
    last_c = coefficients(pp - 1.0, no, np.ones(n, dtype=bool))

    # Stage by stage, over the configurations that have that stage: sorted by PP (descending)
    # they are a prefix, so the work is the total number of stages, not n times the largest PP.
    perm = np.argsort(-pp, kind="stable")
    pp_sorted = pp[perm]
    vs_s, full_s, m_s, f_low_s = vs[perm], full[perm], np.asarray(m, dtype=float)[perm], f_low[perm]
    lo_s, slopes_s = [x[perm] for x in lo_c], [x[perm] for x in slopes]
    first_s, last_s = [x[perm] for x in first_c], [x[perm] for x in last_c]
    v_sorted = _take_vars(v, perm)
    free = np.zeros(n)
    forced = np.zeros(n)
    slope = np.full(n, np.inf)
    # Water-filling bound on the peak with every layer recomputed (memory_lower_bound, vectorized).
    edge_peak = np.zeros(n)
    sum_ratio = np.zeros(n)
    sum_inverse = np.zeros(n)
    for i in range(int(pp.max()) if n else 0):
        if stop is not None and i % 16 == 15 and stop():
            return None
        k = int(np.searchsorted(-pp_sorted, -i, side="left"))  # configurations with pp > i
        s = slice(0, k)
        f_i = in_flight_micro_batches(_take_vars(v_sorted, s), np.full(k, float(i)), m_s[s])
        middle = [lo[s] + s_[s] * (f_i - f_low_s[s]) for lo, s_ in zip(lo_s, slopes_s, strict=True)]
        is_first, is_last = i == 0, pp_sorted[s] - 1 == i
        a, b, d = (np.where(is_first, fc[s], np.where(is_last, lc[s], mc))
                   for fc, lc, mc in zip(first_s, last_s, middle, strict=True))
        b = np.maximum(b, 1e-9)
        tau = (capacity - a) / b
        # Granules: layers of a dense model (at least v per stage), units of an MoE model (at
        # least one, stage 0 at least K; v recomputable layers each, stage 0's prefix never).
        if align.moe:
            lowest = float(align.min_first_units) if is_first else 1.0
            recomputable = vs_s[s]
            a_water = a + np.where(full_s[s] & is_first, -d * align.deficit, 0.0)
        else:
            lowest, recomputable, a_water = vs_s[s], 1.0, a
        need = a + b * lowest - capacity
        saving = np.abs(d)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            forced_i = np.where(need > 0, np.where(saving > 0, need / np.maximum(saving, 1e-300), np.inf), 0.0)
            ratio = b / np.maximum(saving, 1e-300)
        least = np.maximum(b + np.where(full_s[s], d * recomputable, 0.0), 1e-9)
        edge_peak[s] = np.maximum(edge_peak[s], a_water + least * lowest)
        sum_ratio[s] = sum_ratio[s] + a_water / least
        sum_inverse[s] = sum_inverse[s] + 1.0 / least
        forced[s] = forced[s] + forced_i
        free[s] = free[s] + np.maximum(tau, lowest)
        slope[s] = np.where(saving > 0, np.minimum(slope[s], ratio), slope[s])
    granules = model.num_layers / (vs[perm] * align.period) if align.moe else model.num_layers
    overflow = np.maximum(granules - free, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        layers = forced + np.where(overflow > 0, overflow * slope, 0.0)
    water = (granules + sum_ratio) / np.maximum(sum_inverse, 1e-300)
    feasible = np.isfinite(layers) & (np.maximum(edge_peak, water) <= capacity)
    layers = np.where(full_s, layers, 0.0)
    layers = np.where(np.isfinite(layers), layers, 0.0)
    inverse = np.empty_like(perm)
    inverse[perm] = np.arange(n)
    return layers[inverse], feasible[inverse]


def _take_vars(v: PlanVars, index) -> PlanVars:
    """The plan variables of some candidates (array fields and strides indexed)."""
    def take(x):
        return np.asarray(x)[index] if np.ndim(x) else x

    arrays = {f.name: take(getattr(v, f.name)) for f in fields(v) if f.name != "strides"}
    return PlanVars(**arrays, strides={axis: take(s) for axis, s in v.strides.items()})


def memory_lower_bound(sm: StageModel) -> float:
    """A valid lower bound on the peak memory per GPU of any partition (bytes)."""
    a, d, lo = [], [], []
    for i, st in enumerate(sm.stages):
        slope = st.memory_bytes[1] - st.memory_bytes[0]
        intercept = st.memory_bytes[0]
        if sm.recompute_full:
            slope += min(st.memory_per_recomputed_bytes, 0.0) * sm.virtual_stages
            if i == 0 and sm.deficit:  # the dense prefix never recomputes
                intercept -= min(st.memory_per_recomputed_bytes, 0.0) * sm.deficit
        a.append(intercept)
        d.append(max(slope, 1e-9))
        lo.append(sm.min_units(i))
    a_arr, d_arr = np.array(a), np.array(d)
    chunks = sm.chunks
    water = (chunks + np.sum(a_arr / d_arr)) / np.sum(1.0 / d_arr)
    edge = a_arr + d_arr if not sm.deficit else a_arr + d_arr * np.array(lo, dtype=float)
    return float(max(np.max(edge), water))



def least_stage_times(sm: StageModel) -> list[np.ndarray]:
    """Per stage i, indexed by unit count u: the least time F + B + recompute of one
    micro-batch with which u units fit in memory (the fewest recomputed layers r that fit:
    M_i(u) + dM r + [r > 0] transient <= usable, r at most the stage's recomputable layers;
    time grows with r); inf where u is not admissible or cannot fit. Real arithmetic, so no
    plan the cost model accepts is excluded."""
    cap = sm.capacity_bytes * (1 + 1e-12)
    v, units = sm.virtual_stages, sm.chunks
    result = []
    for i, st in enumerate(sm.stages):
        u = np.arange(len(st.memory_bytes))
        time = st.forward_s + st.backward_s
        memory = st.memory_bytes
        fits = memory <= cap
        if sm.recompute_full and st.memory_per_recomputed_bytes < 0:
            over = memory + st.memory_transient_bytes - cap
            need = np.where(fits, 0.0, np.ceil(np.maximum(over, 0.0) / -st.memory_per_recomputed_bytes - 1e-9))
            allowed = v * u - (sm.deficit if i == 0 else 0)
            fits = fits | (need <= allowed)
            time = time + np.where(fits, need, 0.0) * sm.recompute_s
        usable = fits & (u >= sm.min_units(i)) & (u <= units)
        result.append(np.where(usable, time, np.inf))
    return result


def edge_exposure(sm: StageModel, head: int) -> np.ndarray:
    """A lower bound on the gradient-reduction plus weight-gather seconds left exposed, as a
    function of the unit counts of the first `head` stages (1 or 2): an array indexed
    [u_0, u_1] (with head 1, one column). From planner.llm.stage_tables' module
    doc, the i = 0 and i = 1 terms of

        grad_exposed >= max(0, X_0(u_0), X_1(u_1) - B_0(u_0)),   X_i = max(G_i - wg B_i, Gfloor_i)
        param_exposed >= max(0, Y_0(u_0), Y_1(u_1) - F_0(u_0)),  Y_i = max(P_i - wp F_i, Pfloor_i)

    (stage 0 finishes last, so only its own backward hides its reduction; stage 1's also has
    stage 0's). B is taken with every recomputable layer recomputed (the longest backward: the
    most hiding and the most slack), so that the bound holds whatever the recompute counts."""
    def hidden(i: int):
        st = sm.stages[i]
        u = np.arange(len(st.memory_bytes))
        backward = st.backward_s
        if sm.recompute_full:
            backward = backward + np.maximum(sm.recomputable(i, u), 0) * sm.recompute_s
        grad = np.maximum(st.grad_s - sm.grad_window * backward, st.grad_floor_s)
        param = np.maximum(st.param_s - sm.param_window * st.forward_s, st.param_floor_s)
        return grad, param, backward, st.forward_s

    g0, p0, b0, f0 = hidden(0)
    if head == 1:
        e = np.maximum(0.0, g0) + np.maximum(0.0, p0)
        return e[:, None]
    g1, p1, _, _ = hidden(1)
    grad = np.maximum(np.maximum(0.0, g0)[:, None], g1[None, :] - b0[:, None])
    param = np.maximum(np.maximum(0.0, p0)[:, None], p1[None, :] - f0[:, None])
    return grad + param


EXPOSURE_GRID = 32
"""Exposure thresholds per slowest-stage limit in `exposure_refinement` (its rounding is at most
1/EXPOSURE_GRID of the window between the pipeline part and the incumbent)."""
EXPOSURE_CELLS = 2_000_000
"""Largest stages x (units + 1)^2 for which `exposure_refinement` runs."""


def exposure_refinement(sm: StageModel, tables: list[np.ndarray], weight: float, extra: float):
    """A sharper bound for one slowest-stage limit, counting every stage's data-parallel exposure;
    None where it does not apply (one stage, no exposure, too large).

    Stage i's reduction is hidden only by the backward passes of the stages before it
    (planner.llm.stage_tables module doc): exposure >= max_i Z_i with

        Z_i = max(0, X_i(u_i) - S_i) + max(0, Y_i(u_i) - SF_i),   S_i = sum_{j<i} B_j(u_j)

    (X_i, Y_i as in `edge_exposure`; max of sums <= sum of maxes). S_i is at most Smax_i(s), the
    largest backward sum of i stages holding s units in all (each stage fitting; B with every
    recomputable layer recomputed), and s is what a shortest path over stages in order knows.
    For an exposure threshold E, the least sum of stage times with t_i <= limit and
    Z_i(u_i; Smax_i(s)) <= E for every stage is a shortest path over (stage, units used); with
    thresholds 0 = g_0 < ... < g_n = Emax, every partition with exposure in (g_k, g_k+1] costs
    at least weight * limit + S(g_k+1) / v + g_k + extra, and one with exposure above Emax at
    least weight * limit + S(inf) / v + Emax + extra. The returned function takes (limit, cap)
    and gives the least of these (>= cap means: no partition under this limit beats cap).
    """
    p, v, units = sm.num_stages, sm.virtual_stages, sm.chunks
    if p < 2 or p * (units + 1) ** 2 > EXPOSURE_CELLS:
        return None
    u = np.arange(units + 1)
    hide, exposed, forward = [], [], []
    for i, st in enumerate(sm.stages):
        backward = st.backward_s[: units + 1]
        if sm.recompute_full:
            backward = backward + np.maximum(sm.recomputable(i, u), 0) * sm.recompute_s
        grad = np.maximum(st.grad_s[: units + 1] - sm.grad_window * backward, st.grad_floor_s[: units + 1])
        param = np.maximum(st.param_s[: units + 1] - sm.param_window * st.forward_s[: units + 1],
                           st.param_floor_s[: units + 1])
        fits = np.isfinite(tables[i])
        hide.append(np.where(fits, backward, -np.inf))
        forward.append(np.where(fits, st.forward_s[: units + 1], -np.inf))
        exposed.append((grad, param))
    if max(float(np.max(g)) for g, _ in exposed) <= 0 and max(float(np.max(q)) for _, q in exposed) <= 0:
        return None
    # Smax_i(s), SFmax_i(s): the most backward (forward) seconds i stages of s units can take.
    sums = u
    slack_b = [np.where(u == 0, 0.0, -np.inf)]
    slack_f = [np.where(u == 0, 0.0, -np.inf)]
    source = sums[:, None] - u[None, :]
    valid = source >= 0
    for i in range(p - 1):
        for acc, table in ((slack_b, hide[i]), (slack_f, forward[i])):
            prev = acc[-1]
            cand = np.where(valid, prev[np.maximum(source, 0)] + table[None, :], -np.inf)
            acc.append(np.max(cand, axis=1))
    # Z_i(u, s) for every stage: (p, s, u); +inf-free (slack -inf only where s is unreachable).
    with np.errstate(invalid="ignore"):
        z = np.stack([
            np.maximum(0.0, exposed[i][0][None, :] - np.where(np.isfinite(slack_b[i]), slack_b[i], 0.0)[:, None])
            + np.maximum(0.0, exposed[i][1][None, :] - np.where(np.isfinite(slack_f[i]), slack_f[i], 0.0)[:, None])
            for i in range(p)
        ])
    least_rest = sum(float(np.min(t)) for t in tables) / v

    def bound(limit: float, cap: float, track: bool = False):
        """The bound for `limit` (at most cap); with track, (bound, the partition attaining the
        least of the shortest paths, or None)."""
        top = cap - weight * limit - extra - least_rest  # exposure above this cannot beat cap
        if top <= 0:
            return (cap, None) if track else cap
        grid = np.linspace(0.0, top, EXPOSURE_GRID + 1)
        thresholds = np.append(grid[1:], np.inf)  # path k allows exposure <= thresholds[k]
        floors = grid  # ... and partitions it admits but path k - 1 does not have >= grid[k]
        best = np.full((len(thresholds), units + 1), np.inf)
        best[:, 0] = 0.0
        picks = []
        for i in range(p):
            t = tables[i]
            allowed = np.flatnonzero(t <= limit)
            if len(allowed) == 0:
                return (cap, None) if track else cap
            src = sums[:, None] - allowed[None, :]  # (s', u)
            ok = src >= 0
            srcc = np.maximum(src, 0)
            zi = z[i][srcc, allowed[None, :]]  # (s', u): exposure of stage i given its prefix
            admit = ok[None] & (zi[None] <= thresholds[:, None, None])
            cand = np.where(admit, best[:, srcc] + t[allowed][None, None, :], np.inf)
            if track:
                pick = np.argmin(cand, axis=2)
                picks.append(allowed[pick])
                best = np.take_along_axis(cand, pick[:, :, None], axis=2)[:, :, 0]
            else:
                best = np.min(cand, axis=2)
        values = weight * limit + best[:, units] / v + floors + extra
        k = int(np.argmin(values))
        value = float(min(values[k], cap))
        if not track:
            return value
        if not np.isfinite(values[k]):
            return value, None
        partition, left = [], units
        for pick in reversed(picks):
            u_i = int(pick[k, left])
            partition.append(u_i)
            left -= u_i
        return value, partition[::-1]

    return bound


PIPELINE_BOUND_CELLS = 4_000_000
"""Largest (admissible stage-unit pairs) x (units + 1) of a configuration whose pipeline part is
minimized exactly by `pipeline_lower_bound` (memory and time); larger ones get its T* bound."""


def pipeline_lower_bound(sm: StageModel, upper: float = math.inf) -> tuple[float, list[int] | None]:
    """(a valid lower bound on the step time of any partition of a priced configuration, the
    partition that attains it or None); the bound is inf where no partition fits, and may stop
    early at any value above `upper`.

    With t_i(u) of `least_stage_times` (the least stage time at which u units fit), every
    partition costs at least its pipeline part with those times, plus the least optimizer step
    and the embedding sync:
        T >= min over partitions of (m - 1/v) max_i t_i(u_i) + sum_i t_i(u_i) / v + e(u_0, u_1)
             + max_i min O_i + sync
    where e (`edge_exposure`) bounds the data-parallel communication of stages 0 and 1 that
    the backward and forward passes cannot hide (stage 0 finishes last), which is computed
    exactly (stages 0 and 1 enumerated as a pair): for each candidate slowest time T (the table values, ascending
    from the least T* at which the unit counts allowed by t_i(u) <= T can sum to U), the least
    sum of stage times with every t_i(u_i) <= T and sum_i u_i = U (a shortest path over stages
    and units), until (m - 1/v) T plus the least sum exceeds the best value found (or `upper`).
    The partition is a good plan to try (with the fewest recomputed layers). Configurations
    beyond PIPELINE_BOUND_CELLS (thousands of layers) get the weaker (m - 1/v) T* + S / v + ...,
    S >= max(sum_i min t_i, T* + sum_i min t_i - max_i min t_i).
    """
    v, m, units = sm.virtual_stages, sm.num_micro_batches, sm.chunks
    tables = [t[: units + 1] for t in least_stage_times(sm)]
    if any(not np.isfinite(t).any() for t in tables):
        return math.inf, None
    extra = max(float(np.min(st.optimizer_s[: units + 1][np.isfinite(t)]))
                for st, t in zip(sm.stages, tables, strict=True))
    extra += sm.embedding_sync_s
    weight = m - 1.0 / v
    sums = np.arange(units + 1)

    def least_sum(limit: float, track: bool):
        best = np.full(units + 1, np.inf)
        best[0] = 0.0
        choices = []
        for t in rest_tables:
            allowed = np.flatnonzero(t <= limit)
            source = sums[:, None] - allowed[None, :]
            cost = np.where(source >= 0, best[np.maximum(source, 0)] + t[allowed][None, :], np.inf)
            pick = np.argmin(cost, axis=1)
            best = cost[sums, pick]
            if track:
                choices.append(allowed[pick])
        # The head: best_rest[U - u_0 - u_1] + its pair cost, over its units within the limit.
        if head == 2:
            inside = np.where((tables[0] <= limit)[:, None] & (tables[1] <= limit)[None, :], pair_cost, np.inf)
            left = units - sums[:, None] - sums[None, :]
            total = np.where(left >= 0, inside + best[np.maximum(left, 0)], np.inf)
        else:
            inside = np.where(tables[0] <= limit, pair_cost, np.inf)  # head 1: a single stage
            total = inside + best[units - sums]
        flat = int(np.argmin(total))
        return float(total.flat[flat]), (np.unravel_index(flat, total.shape), choices)

    def admits(limit: float) -> bool:
        low = high = 0
        for t in tables:
            inside = np.flatnonzero(t <= limit)
            if len(inside) == 0:
                return False
            low += int(inside[0])
            high += int(inside[-1])
        return low <= units <= high

    values = np.unique(np.concatenate([t[np.isfinite(t)] for t in tables]))
    if not admits(float(values[-1])):
        return math.inf, None
    lo, hi = 0, len(values) - 1  # the least T* that admits sum_i u_i = U
    while lo < hi:
        mid = (lo + hi) // 2
        if admits(float(values[mid])):
            hi = mid
        else:
            lo = mid + 1
    if sum(int(np.isfinite(t).sum()) for t in tables) * (units + 1) > PIPELINE_BOUND_CELLS:
        # Too large for the exact minimum: the slowest stage takes at least T*, the others at
        # least their least times.
        slowest = float(values[lo])
        lowest = [float(np.min(t)) for t in tables]
        least = sum(lowest)
        shown = float(np.min(edge_exposure(sm, 1)[: units + 1, 0][np.isfinite(tables[0])]))
        return weight * slowest + max(least, slowest + least - max(lowest)) / v + shown + extra, None
    # What the shortest path adds up: stage times, plus the exposure of the first stages (times v,
    # as the sum is divided by v); the slowest-stage limit still applies to the stage times alone.
    # Stages 0 and 1 are taken as one pair (their exposure couples them), the rest one by one.
    head = min(2, len(tables))
    pair = edge_exposure(sm, head)[: units + 1, : units + 1]
    if head == 2:
        pair_cost = tables[0][:, None] + tables[1][None, :] + v * pair
    else:
        pair_cost = tables[0] + v * pair[:, 0]  # (units,): one stage
    rest_tables = tables[head:]
    free = float(np.min(pair_cost)) + sum(float(np.min(t)) for t in rest_tables)

    refine = exposure_refinement(sm, tables, weight, extra) if math.isfinite(upper) else None
    found, at, rest = math.inf, None, math.inf  # rest: a bound on every slowest time not tried
    at_refined = None  # the refinement's partition at `at`
    for limit in values[lo:].tolist():
        floor = weight * limit + free / v + extra  # no partition slowest at >= limit does better
        if floor >= min(found, upper * (1 + 1e-9)):
            rest = floor
            break
        total, _ = least_sum(limit, False)
        if not math.isfinite(total):
            continue
        value = weight * limit + total / v + extra
        refined = None
        if refine is not None and value < min(found, upper * (1 + 1e-9)):
            sharper, refined = refine(limit, min(found, upper * (1 + 1e-9)), track=True)
            value = max(value, sharper)
        if value < found:
            found, at, at_refined = value, limit, refined
    if at is None or rest < found:
        return min(found, rest), None
    if at_refined is not None:
        return found, at_refined
    _, (head_units, choices) = least_sum(at, True)
    partition, left = [], units - sum(int(u) for u in head_units)
    for pick in reversed(choices):
        u = int(pick[left])
        partition.append(u)
        left -= u
    return found, [int(u) for u in head_units] + partition[::-1]
