"""The CP-SAT model of one round: configurations, stage partitions and recompute.

Scaling: every time is an integer number of units u, and the objective is S T / u, S the round's
`objective_scale` (12 when every v divides 12, else the lcm of the round's v; at most SCALE_MAX),
so that (sum - max)/v stays integral; S is written 12 below. u = 1 ns unless the round's largest step time
would overflow CP-SAT's int64 arithmetic; then u grows just enough that every linear row stays
below 2^61 (`time_unit_s`). Each table entry is rounded to the nearest unit; `rounding_bound_s`
is the worst accumulated rounding error of a configuration at that unit (reported; tested
against the cost model's re-evaluation). Memory is in units of 1 KiB (coarser likewise only
when the tables would overflow): memory tables and the recompute transient rounded up, the
capacity down, the per-layer change of full recompute down (by less than a unit per layer).

Variables, for each configuration k kept (p stages, C = L/v chunks, m micro-batches):
  x_k          Bool: configuration k is chosen; exactly one is.
  c_ki         int in [lo_ki, hi_ki] (`stage_domains`): units (of v P layers; P = 1 for dense
               models, the MoE period for MoE models) on stage i; sum_i c_ki = C if x_k. Stage 0
               holds at least max(1, K) units (an MoE model's dense prefix; see
               planner.llm.candidates.Alignment: the declared partitions are the aligned ones).
  r_ki         int in [0, L] (full recompute only): recomputed layers on stage i,
               r_ki <= v c_ki - [i = 0] K (dense: every layer; MoE: the stage's MoE blocks).
  y_ki         Bool: r_ki > 0 (stage i pays the recompute transient); r_ki <= L y_ki.
  F_ki, B0_ki  Element(c_ki, table): forward, backward (no recompute) seconds of a micro-batch.
  B_ki         = B0_ki + R_k r_ki: backward with recompute.
  t_ki         = F_ki + B_ki: stage time per micro-batch.
  G_ki, Gf_ki, P_ki, Pf_ki, O_ki  Element(c_ki, table): DP gradient time and its floor, weight
               gather time and its floor, optimizer time.
  SB_ki, SF_ki = sum_{j<i} B_kj, sum_{j<i} F_kj: slack of stage i (stage 0 finishes last).
  eg_ki >= G_ki - wg B_ki, eg_ki >= Gf_ki;  ep_ki >= P_ki - wp F_ki, ep_ki >= Pf_ki.
  tmax_k >= t_ki;  gE_k >= eg_ki - SB_ki, gE_k >= 0;  pE_k >= ep_ki - SF_ki, pE_k >= 0;
  opt_k >= O_ki.
  obj          >= 12 m tmax_k + (12/v)(sum_i t_ki - tmax_k) + 12 (gE_k + pE_k + opt_k + sync_k)
               if x_k; obj >= sum_k 12 LB_k x_k (a valid cut that tightens the bound).
Constraints with enforcement literals (assumptions for infeasibility explanations):
  memory       M_ki(c_ki) + dM_ki r_ki + Tr_ki y_ki <= usable memory, if x_k and A_memory.
When x_k is false its stage variables are fixed (lowest chunk count, no recompute).
Objective: minimize obj. Every maximum above is only bounded from below; T increases in each of
tmax, gE, pE, opt, so at the optimum they equal their maxima: obj = 12 T(plan) / u exactly up to
rounding. Variable domains are the largest values the tables allow within the stage domains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from planner.llm.plan import Plan
from planner.llm.stage_tables import StageModel

UNIT_S = 1e-9
"""The finest time unit (seconds); coarser only when a round would overflow int64."""
MEMORY_UNIT_BYTES = 1024
LCM_V = 12
"""The objective's scale when a round's virtual-stage counts all divide 12 (1, 2, 3, 4, 6, 12);
a round's scale is the least common multiple of its counts (`objective_scale`)."""
SCALE_MAX = 5_040
"""Largest objective scale a round may take (the rounds group configurations so that the least
common multiple of their virtual-stage counts stays within it; one configuration alone has v)."""
LONG_TABLE = 2048
"""Tables longer than this are indexed from their window (c - lo) rather than from 0."""
ROW_LIMIT = 2**61
"""Largest activity (sum of |coefficient| x |bound|) allowed in any linear row; int64 is 2^63."""


def lower_hull(values: list[int], low: int, high: int) -> list[tuple[int, int, int, int]]:
    """Segments (x0, y0, x1, y1) of the lower convex hull of points (x, values[x]), low <= x <= high.

    Each segment gives a valid linear cut var >= y0 + (y1 - y0) (x - x0) / (x1 - x0) for
    var = values[x]: the cuts tighten CP-SAT's LP relaxation of an element constraint.
    """
    hull: list[tuple[int, int]] = []
    for x in range(low, high + 1):
        point = (x, values[x])
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (y2 - y1) * (point[0] - x1) >= (point[1] - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append(point)
    return [(a[0], a[1], b[0], b[1]) for a, b in zip(hull, hull[1:], strict=False)]


@dataclass
class ConfigVars:
    k: int
    sm: StageModel
    x: cp_model.IntVar
    chunks: list
    recomputed: list


@dataclass
class RoundModel:
    """A built round: the model, its configurations' variables and its units."""

    model: cp_model.CpModel
    configs: list[ConfigVars]
    obj: cp_model.IntVar
    a_memory: cp_model.IntVar
    unit_s: float
    memory_unit_bytes: float
    horizon: int
    scale: int = LCM_V

    def objective_s(self, value: float) -> float:
        """Seconds of an objective value (or bound) of this model."""
        return value * self.unit_s / self.scale

    def objective_cap(self, upper_s: float) -> int | None:
        """The largest objective value strictly below `upper_s` seconds, or None if every
        value of the model's domain already is."""
        scaled = self.scale * upper_s / self.unit_s
        if not math.isfinite(scaled) or scaled > self.horizon:
            return None
        return int(math.floor(scaled)) - 1


def _least_times(sm: StageModel) -> list[np.ndarray] | None:
    """MoE models: per stage and unit count, the least step time a partition putting that many
    units there can have: (m - 1/v) t_i(u) + (t_i(u) + sum_{j != i} min t_j) / v, t_i of
    planner.llm.bounds.least_stage_times (the fewest recomputed layers that fit; inf where
    nothing fits). Dense models: None (their domains are unchanged)."""
    if not sm.moe:
        return None
    from planner.llm.bounds import least_stage_times

    tables = least_stage_times(sm)
    lowest = [float(np.min(t)) for t in tables]
    if not all(math.isfinite(x) for x in lowest):  # some stage fits nowhere
        return [np.full_like(t, np.inf) for t in tables]
    total = sum(lowest)
    m, v = sm.num_micro_batches, sm.virtual_stages
    with np.errstate(invalid="ignore"):
        return [np.where(np.isfinite(t), (m - 1.0 / v) * t + (t + total - low) / v, np.inf)
                for t, low in zip(tables, lowest, strict=True)]


def stage_domains(sm: StageModel, upper_s: float) -> list[tuple[int, int]] | None:
    """Valid ranges [lo, hi] of chunks per stage for plans no slower than `upper_s`.

    T >= m t_i >= m (F_i + B_i), so a stage whose time alone exceeds the incumbent is
    excluded (MoE models: with the recompute that fitting needs, `_least_times`); memory
    excludes counts that cannot fit even with every layer recomputed; then
    sum_i c_i = C gives lo_i = C - sum_{j != i} hi_j. None: no partition can beat the incumbent.
    """
    C, m = sm.chunks, sm.num_micro_batches
    top = C - sm.num_stages + 1
    ranges = []
    least = _least_times(sm)
    for i, st in enumerate(sm.stages):
        time_ok = m * (st.forward_s + st.backward_s) <= upper_s * (1 + 1e-9) + 1e-12
        if least is not None:
            time_ok = time_ok & (least[i] <= upper_s * (1 + 1e-9) + 1e-12)
        slope = st.memory_per_recomputed_bytes * sm.virtual_stages if sm.recompute_full else 0.0
        least_memory = st.memory_bytes + min(slope, 0.0) * np.arange(len(st.memory_bytes))
        if i == 0 and sm.deficit and sm.recompute_full:  # stage 0 cannot recompute its dense prefix
            least_memory = least_memory - min(st.memory_per_recomputed_bytes, 0.0) * sm.deficit
        memory_ok = least_memory <= sm.capacity_bytes
        allowed = np.flatnonzero(time_ok[1 : top + 1] & memory_ok[1 : top + 1]) + 1
        allowed = allowed[allowed >= sm.min_units(i)]
        if len(allowed) == 0:
            return None
        ranges.append((int(allowed[0]), int(allowed[-1])))
    total_hi = sum(hi for _, hi in ranges)
    if total_hi < C or sum(lo for lo, _ in ranges) > C:
        return None
    tightened = []
    for lo, hi in ranges:
        lo = max(lo, C - (total_hi - hi))
        if lo > hi:
            return None
        tightened.append((lo, hi))
    return tightened


MAX_TABLE_ENTRIES = 4_000_000
"""Largest stages x (chunks + 1) of a configuration whose tables are built (memory)."""
ROUND_VALUES_MAX = 8_000
"""Largest `round_values` of a model: beyond it CP-SAT's presolve, which ignores time limits
and stop requests, takes about a second or more (~0.1 ms per value on 2 cores)."""


def table_entries(config: Plan, num_layers: int) -> int:
    """Entries of one of a configuration's stage tables over all its stages."""
    return config.pp * (num_layers // config.virtual_stages + 1)


def round_values(sm: StageModel, upper_s: float) -> int:
    """Chunk counts a round model holds for a configuration (the sum of its stage domains);
    CP-SAT's loading time grows with it (each is a row of eight element tables)."""
    domains = stage_domains(sm, upper_s)
    return 0 if domains is None else sum(hi - lo + 1 for lo, hi in domains)


def _recompute_tops(sm: StageModel, domains, upper_s: float) -> list[int]:
    """Per stage, the most layers it may recompute and still beat `upper_s` (full recompute)."""
    if not sm.recompute_full:
        return [0] * sm.num_stages
    L, m = sm.num_layers, sm.num_micro_batches
    tops = []
    for i, (st, (lo, hi)) in enumerate(zip(sm.stages, domains, strict=True)):
        base = float(np.min((st.forward_s + st.backward_s)[lo : hi + 1]))
        room = upper_s / m - base if math.isfinite(upper_s) else math.inf
        if room == math.inf or sm.recompute_s <= 0:
            top = L
        else:
            top = int(min(L, math.floor(room / sm.recompute_s + 1e-9)))
        tops.append(max(0, min(top, sm.recomputable(i, hi))))
    return tops


def _window_max(table, lo: int, hi: int) -> float:
    return float(np.max(table[lo : hi + 1]))


def _magnitudes(sm: StageModel, domains, tops) -> tuple[float, float, float]:
    """(largest stage time, largest DP/optimizer time, largest step time) in seconds over the
    stage domains: the variables' upper bounds before scaling."""
    stage_hi = dp_hi = 0.0
    for st, (lo, hi), top in zip(sm.stages, domains, tops, strict=True):
        stage_hi = max(stage_hi, _window_max(st.forward_s, lo, hi) + _window_max(st.backward_s, lo, hi)
                       + top * max(sm.recompute_s, 0.0))
        dp_hi = max(dp_hi, *(_window_max(t, lo, hi) for t in (st.grad_s, st.grad_floor_s, st.param_s,
                                                                  st.param_floor_s, st.optimizer_s)))
    step_hi = (sm.num_micro_batches + sm.num_stages + 1) * stage_hi + 3 * dp_hi + sm.embedding_sync_s
    return stage_hi, dp_hi, step_hi


@dataclass(frozen=True)
class _Ranges:
    """Integer upper bounds of one configuration's variables at a time unit."""

    stage: int  # F + B of a stage (tmax, B)
    dp: int  # gradient, weight gather and optimizer times and their exposures
    step: int  # the objective row: 12 (m + p) stage + 12 (3 dp + sync + 1)


def objective_scale(virtual_stages) -> int:
    """The objective's integer scale for configurations with these virtual-stage counts: 12 (the
    historical scale) when every count divides it, else their least common multiple, so that
    the bubble term (sum t - tmax) / v has the integer coefficient scale / v."""
    counts = [int(v) for v in virtual_stages]
    if all(LCM_V % v == 0 for v in counts):
        return LCM_V
    return math.lcm(*counts)


def _ranges(sm: StageModel, magnitudes, unit: float, scale: int = LCM_V) -> _Ranges:
    stage_hi_s, dp_hi_s, _ = magnitudes
    # + rounding: F and B0 are rounded by half a unit each, the recompute coefficient by half a
    # unit per recomputed layer.
    stage = int(math.ceil(stage_hi_s / unit)) + sm.num_layers + 2
    dp = int(math.ceil(dp_hi_s / unit)) + 1
    sync = int(round(sm.embedding_sync_s / unit))
    step = scale * (sm.num_micro_batches + sm.num_stages) * stage + scale * (3 * dp + sync + 1)
    return _Ranges(stage=stage, dp=dp, step=step)


def time_unit_s(models: list[StageModel], magnitudes: list, max_chunks: int, scale: int = LCM_V) -> float:
    """The finest unit (1 ns, doubled as needed) at which every linear row stays below ROW_LIMIT.

    Rows: the objective row (obj plus 12 m tmax + ..., at most 2 horizon), the bound cut (obj
    plus one coefficient <= horizon per configuration) and the hull cuts ((C + 1) times a table
    value, three terms).
    """
    unit = UNIT_S
    step_hi = max((mag[2] for mag in magnitudes), default=0.0)
    # A first guess from the seconds, then exact checks on the integer ranges.
    unit = max(unit, scale * step_hi * (len(models) + 2) / ROW_LIMIT)
    while True:
        ranges = [_ranges(sm, mag, unit, scale) for sm, mag in zip(models, magnitudes, strict=True)]
        horizon = max((r.step for r in ranges), default=1)
        table_hi = max((max(r.stage, r.dp) for r in ranges), default=1)
        if (len(models) + 2) * horizon <= ROW_LIMIT and 3 * (max_chunks + 1) * table_hi <= ROW_LIMIT:
            return unit
        unit *= 2.0


def _ints(values, unit: float) -> list[int]:
    return [int(round(float(x) / unit)) for x in values]


def build_model(
    models: list[StageModel],
    lower_bounds: list[float],
    incumbent: Plan | None,
    memory_literal: bool = True,
    upper_s: float = math.inf,
) -> RoundModel:
    """The CP-SAT model of the module docstring.

    Configurations that cannot beat `upper_s` (see `stage_domains`) are left out.
    """
    kept = []
    for sm, lb in zip(models, lower_bounds, strict=True):
        domains = stage_domains(sm, upper_s)
        if domains is not None:
            tops = _recompute_tops(sm, domains, upper_s)
            kept.append((sm, lb, domains, tops, _magnitudes(sm, domains, tops)))
    max_chunks = max((sm.chunks for sm, *_ in kept), default=1)
    scale = objective_scale([sm.virtual_stages for sm, *_ in kept] or [1])
    unit = time_unit_s([sm for sm, *_ in kept], [mag for *_, mag in kept], max_chunks, scale)
    ranges = [_ranges(sm, mag, unit, scale) for sm, *_, mag in kept]
    memory_hi = max((max(float(np.max(st.memory_bytes)), abs(st.memory_per_recomputed_bytes) * sm.num_layers,
                         st.memory_transient_bytes, sm.capacity_bytes)
                     for sm, *_ in kept for st in sm.stages), default=0.0)
    mem_unit = max(MEMORY_UNIT_BYTES, 3.0 * (max_chunks + 1) * memory_hi / ROW_LIMIT)
    horizon = max((r.step for r in ranges), default=1)

    model = cp_model.CpModel()
    a_memory = model.new_bool_var("A_memory")
    configs: list[ConfigVars] = []
    obj = model.new_int_var(0, horizon, "obj")
    xs = []
    for k, ((sm, _, domains, tops, _), bounds) in enumerate(zip(kept, ranges, strict=True)):
        C, v = sm.chunks, sm.virtual_stages
        stage_hi, dp_hi = bounds.stage, bounds.dp
        x = model.new_bool_var(f"x_{k}")
        xs.append(x)
        chunks, recomputed = [], []
        t_terms = []
        tmax = model.new_int_var(0, stage_hi, f"tmax_{k}")
        g_exp = model.new_int_var(0, dp_hi, f"gE_{k}")
        p_exp = model.new_int_var(0, dp_hi, f"pE_{k}")
        opt = model.new_int_var(0, dp_hi, f"opt_{k}")
        slack_b = 0
        slack_f = 0
        r_unit = int(round(sm.recompute_s / unit))
        m = sm.num_micro_batches
        for i, st in enumerate(sm.stages):
            lo, hi = domains[i]
            c = model.new_int_var(lo, hi, f"c_{k}_{i}")
            model.add(c == lo).only_enforce_if(~x)
            chunks.append(c)

            shifted: list = []  # c - lo, indexing long tables from their window only

            def element(values, name, c=c, lo=lo, hi=hi, shifted=shifted):
                window = values[lo:]
                var = model.new_int_var(min(window), max(window), f"{name}_{k}_{i}")
                if lo == hi:
                    model.add(var == values[lo])
                    return var
                if len(values) > LONG_TABLE and lo > 0:
                    if not shifted:
                        shifted.append(model.new_int_var(0, hi - lo, f"cs_{k}_{i}"))
                        model.add(shifted[0] == c - lo)
                    model.add_element(shifted[0], window, var)
                else:
                    model.add_element(c, values, var)
                for x0, y0, x1, y1 in lower_hull(values, lo, hi):
                    model.add((x1 - x0) * var >= (x1 - x0) * y0 + (y1 - y0) * (c - x0))
                return var

            def timed(table, name, hi=hi):
                return element(_ints(table[: hi + 1], unit), name)

            f = timed(st.forward_s, "F")
            b0 = timed(st.backward_s, "B0")
            if sm.recompute_full:
                r_top = tops[i]
                r = model.new_int_var(0, r_top, f"r_{k}_{i}")
                y = model.new_bool_var(f"y_{k}_{i}")
                model.add(r <= v * c - (sm.deficit if i == 0 else 0))
                model.add(r <= max(r_top, 1) * y)
                model.add(r == 0).only_enforce_if(~x)
                model.add(y == 0).only_enforce_if(~x)
                b = b0 + r_unit * r
            else:
                r, y = 0, 0
                b = b0
            recomputed.append(r)
            b_var = model.new_int_var(0, stage_hi, f"B_{k}_{i}")
            model.add(b_var == b)
            t_terms.append(f + b_var)
            model.add(tmax >= f + b_var)
            g = timed(st.grad_s, "G")
            gf = timed(st.grad_floor_s, "Gf")
            pg = timed(st.param_s, "P")
            pf = timed(st.param_floor_s, "Pf")
            o = timed(st.optimizer_s, "O")
            eg = model.new_int_var(0, dp_hi, f"eg_{k}_{i}")
            ep = model.new_int_var(0, dp_hi, f"ep_{k}_{i}")
            model.add(eg >= g - int(sm.grad_window) * b_var)
            model.add(eg >= gf)
            model.add(ep >= pg - int(sm.param_window) * f)
            model.add(ep >= pf)
            model.add(g_exp >= eg - slack_b)
            model.add(p_exp >= ep - slack_f)
            model.add(opt >= o)
            slack_b = slack_b + b_var
            slack_f = slack_f + f
            # Memory: M_i(c) + dM r + transient y <= usable (memory units; tables rounded up).
            mem = element([int(math.ceil(float(mb) / mem_unit)) for mb in st.memory_bytes[: hi + 1]], "M")
            per_r = int(math.floor(st.memory_per_recomputed_bytes / mem_unit)) if sm.recompute_full else 0
            trans = int(math.ceil(st.memory_transient_bytes / mem_unit)) if sm.recompute_full else 0
            cap = int(math.floor(sm.capacity_bytes / mem_unit))
            literals = [x, a_memory] if memory_literal else [x]
            model.add(mem + per_r * r + trans * y <= cap).only_enforce_if(literals)
        model.add(sum(chunks) == C).only_enforce_if(x)
        sync = int(round(sm.embedding_sync_s / unit))
        expr = (scale * m * tmax + (scale // v) * (sum(t_terms) - tmax)
                + scale * (g_exp + p_exp + opt) + scale * sync)
        model.add(obj >= expr).only_enforce_if(x)
        configs.append(ConfigVars(k=k, sm=sm, x=x, chunks=chunks, recomputed=recomputed))
    if xs:
        model.add_exactly_one(xs)
        # Branch on the configuration first (cheapest bound first): once it is fixed, the rest is
        # a small partition problem whose LP relaxation is tight.
        model.add_decision_strategy(xs, cp_model.CHOOSE_FIRST, cp_model.SELECT_MAX_VALUE)
        model.add(obj >= sum(min(horizon, int(math.floor(scale * lb / unit))) * x
                             for (_, lb, *_), x in zip(kept, xs, strict=True)))
    else:
        model.add_bool_or([])  # nothing can beat the incumbent: infeasible by construction
    model.minimize(obj)
    if incumbent is not None:
        _hint(model, configs, incumbent)
    return RoundModel(model=model, configs=configs, obj=obj, a_memory=a_memory, unit_s=unit,
                      memory_unit_bytes=mem_unit, horizon=horizon, scale=scale)


def _partition_of(plan: Plan, sm: StageModel) -> tuple[list[int], list[int]] | None:
    """(units, recomputed layers) per stage of a plan of `sm`'s configuration; None if its
    partition is not one of `sm`'s (not aligned)."""
    layers = plan.layers_per_stage(sm.num_layers)
    if any(n % sm.unit_layers for n in layers) or layers[0] // sm.unit_layers < sm.min_units(0):
        return None
    units = [n // sm.unit_layers for n in layers]
    mix = [sm.recomputable(i, u) for i, u in enumerate(units)] if sm.moe else None
    rc = plan.recomputed_layers(sm.num_layers, mix) if sm.recompute_full else [0] * sm.num_stages
    return units, list(rc)


def same_config(a: Plan, b: Plan) -> bool:
    keys = ("tp", "sp", "tp_comm_overlap", "cp", "pp", "virtual_stages", "dp", "zero_stage",
            "micro_batch_size", "recompute", "ep", "etp", "dispatcher", "ep_comm_overlap")
    if any(getattr(a, k) != getattr(b, k) for k in keys):
        return False
    if a.shard_size != b.shard_size:
        return False
    degrees = {ax: a.degree(ax) for ax in ("tp", "cp", "dp", "pp")}
    key = [ax for ax in a.axis_order if degrees[ax] > 1]
    return key == [ax for ax in b.axis_order if degrees[ax] > 1]


def _hint(model: cp_model.CpModel, configs: list[ConfigVars], incumbent: Plan) -> None:
    """The incumbent as a solution hint, when its configuration is in the round."""
    for cv in configs:
        if same_config(cv.sm.config, incumbent):
            part = _partition_of(incumbent, cv.sm)
            if part is None:
                continue
            model.add_hint(cv.x, 1)
            for var, value in zip(cv.chunks, part[0], strict=True):
                model.add_hint(var, value)
            if cv.sm.recompute_full:
                for var, value in zip(cv.recomputed, part[1], strict=True):
                    model.add_hint(var, value)
            break


def rounding_bound_s(sm: StageModel, unit_s: float = UNIT_S) -> float:
    """Worst-case |objective * u / S - T| from rounding each table entry to a unit u."""
    p, m, v, L = sm.num_stages, sm.num_micro_batches, sm.virtual_stages, sm.num_layers
    per_stage = 0.5 * unit_s * (2 + 2 + L)  # F, B0, B assembly, recompute coefficient times r <= L
    return m * per_stage + (p * per_stage) / v + 0.5 * unit_s * (6 + 4 * p) + p * per_stage * 2
