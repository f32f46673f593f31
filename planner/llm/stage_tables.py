"""One configuration's pipeline, priced per stage as tables for the exact solvers.

A *configuration* fixes every decision except the stage partition and the per-stage recompute
counts. For it, the cost model prices each stage i as a function of its layer count l (a
multiple of the virtual stages v) and its recomputed layers r:

    F_i(l), B_i(l)            forward/backward seconds of one micro-batch with r = 0
    + r * recompute_s         backward seconds added per recomputed layer (exactly linear)
    G_i(l), Gfloor_i(l)       gradient reduction seconds and its never-hidden part
    P_i(l), Pfloor_i(l)       weight gather seconds and its never-hidden part
    O_i(l)                    Adam step seconds
    M_i(l) + r*dM_i + [r>0]*transient_i   peak memory bytes

Tables are indexed by units u = l / (v P) = 0 .. L / (v P) and computed by `planner.llm.cost`
itself (stage_terms, data_parallel_raw, stage_memory on numpy arrays), so the solvers never
re-derive a formula. P = 1 for dense models; for MoE models P is the period of the MoE layers and
a stage of u units holds v u - [first] K MoE blocks (`planner.llm.candidates.Alignment`: the
declared space holds the aligned partitions, where this is exact); stage 0 holds at least
`min_first_units` units (the dense prefix), and recomputes at most its MoE blocks. Stage 0's
entries below its minimum are priced at the same composition clamped at 0 MoE blocks (time) or
by the affine extension (memory, exactly affine in the blocks); no solver picks them.
Only the first and last stages differ in F, B, G, P, O; memory also differs by stage index
(micro-batches in flight). The step time is then (planner.llm.cost.step.assemble):

    T = m max_i t_i + (sum_i t_i - max_i t_i) / v + grad_exposed + param_exposed
        + embedding_sync + max_i O_i
    t_i = F_i + B_i + r_i recompute_s
    grad_exposed = max(0, max_i [max(G_i - wg B_i, Gfloor_i) - sum_{j<i} B_j])
    param_exposed = max(0, max_i [max(P_i - wp F_i, Pfloor_i) - sum_{j<i} F_j])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.llm.candidates import alignment
from planner.llm.cost.blocks import block_costs
from planner.llm.cost.edges import edge_cost
from planner.llm.cost.layout import RECOMPUTE_CODES, PlanVars
from planner.llm.cost.memory import stage_memory
from planner.llm.cost.step import StageSpec, data_parallel_raw, stage_terms, tied_embedding_sync_s
from planner.llm.plan import Plan
from planner.llm.problem import Problem


@dataclass(frozen=True)
class StageTables:
    """Priced tables of one stage position (see module doc); arrays indexed by l / v."""

    forward_s: np.ndarray
    backward_s: np.ndarray
    grad_s: np.ndarray
    grad_floor_s: np.ndarray
    param_s: np.ndarray
    param_floor_s: np.ndarray
    optimizer_s: np.ndarray
    memory_bytes: np.ndarray
    memory_per_recomputed_bytes: float
    memory_transient_bytes: float


@dataclass(frozen=True)
class StageModel:
    """A configuration's stages priced for every layer count."""

    config: Plan
    num_layers: int
    num_stages: int
    virtual_stages: int
    num_micro_batches: int
    recompute_full: bool
    recompute_s: float
    grad_window: float
    param_window: float
    embedding_sync_s: float
    capacity_bytes: float
    stages: list[StageTables]
    period: int = 1
    deficit: int = 0
    moe: bool = False
    batch_weight: float = 1.0
    """Reference batch / this configuration's batch (`Plan.batch_weight`): the solvers compare
    step times times this factor (1 for a fixed batch)."""

    @property
    def chunks(self) -> int:
        """L / (v P): the number of units (model chunks of P layers per virtual stage) to distribute."""
        return self.num_layers // self.virtual_stages // self.period

    @property
    def unit_layers(self) -> int:
        """Layers in one unit: v P."""
        return self.virtual_stages * self.period

    def min_units(self, i: int) -> int:
        """The fewest units stage i may hold (stage 0 holds the dense prefix)."""
        return max(1, self.deficit) if i == 0 else 1

    def recomputable(self, i: int, units: int) -> int:
        """Layers stage i may fully recompute with `units` units: v u, less the dense prefix's
        K on stage 0 of an MoE model (only MoE blocks recompute there)."""
        return self.virtual_stages * units - (self.deficit if i == 0 else 0)


def stage_model(problem: Problem, config: Plan) -> StageModel:
    """Prices every stage of `config` for every admissible unit count.

    Time and data-parallel tables depend only on whether a stage is first, last or in the
    middle, so they are priced once per kind; memory depends on the stage index (micro-batches
    in flight) and is priced for all stages in one array call.
    """
    model, task, cluster = problem.model, problem.task, problem.cluster
    align = alignment(model)
    v = PlanVars.from_plan(config)
    layer = block_costs(problem, v)
    edges = edge_cost(problem, v, layer.tokens)
    p, vs = config.pp, config.virtual_stages
    m = config.num_micro_batches(config.sequences(task))
    step = vs * align.period
    layers = np.arange(0, model.num_layers + 1, step, dtype=float)
    units = np.arange(len(layers), dtype=float)
    zeros = np.zeros_like(layers)
    full = config.recompute == "full"
    capacity = cluster.device.hbm_bytes * (1.0 - task.memory_headroom)
    one = np.ones(1)

    def moe_of(first: bool, clamp: bool):
        if not align.moe:
            return 0
        moe = align.moe_layers(units, vs, first)
        return np.maximum(moe, 0.0) if clamp else moe

    kinds: dict[tuple[bool, bool], tuple] = {}
    recompute_s = grad_window = param_window = 0.0
    for first, last in {(i == 0, i == p - 1) for i in range(p)}:
        spec = StageSpec(index=0, layers=layers, recomputed=zeros, is_first=first, is_last=last,
                         moe_layers=moe_of(first, clamp=True))
        terms = stage_terms(problem, v, layer, edges, spec)
        raw = data_parallel_raw(problem, v, spec)
        grad_window, param_window = raw.grad_window, raw.param_window
        if full:
            with_r = stage_terms(problem, v, layer, edges, StageSpec(0, one, one, first, last))
            without_r = stage_terms(problem, v, layer, edges, StageSpec(0, one, 0 * one, first, last))
            recompute_s = float(with_r.backward_s[0] - without_r.backward_s[0])

        def table(x):
            return np.broadcast_to(np.asarray(x, dtype=float), layers.shape).copy()

        kinds[(first, last)] = (
            table(terms.forward_s), table(terms.backward_s), table(raw.grad_s), table(raw.grad_floor_s),
            table(raw.param_s), table(raw.param_floor_s), table(raw.optimizer_s),
        )

    index = np.arange(p, dtype=float)[:, None]
    first_mask = index == 0
    last_mask = index == p - 1
    grid = np.broadcast_to(layers[None, :], (p, len(layers)))
    moe_grid = 0
    if align.moe:
        moe_grid = np.where(first_mask, moe_of(True, clamp=False)[None, :], moe_of(False, clamp=False)[None, :])
    mem0 = stage_memory(problem, v, layer, grid, 0 * grid, index, first_mask, last_mask, m, edges.logits_bytes,
                        moe_grid)
    ones = np.ones((p, 1))
    mem_r0 = stage_memory(problem, v, layer, ones, 0 * ones, index, first_mask, last_mask, m, edges.logits_bytes)
    mem_r1 = stage_memory(problem, v, layer, ones, ones, index, first_mask, last_mask, m, edges.logits_bytes)
    transient = float(np.asarray(layer.recomputed("activation_none_bytes"))) if full else 0.0
    memory = np.broadcast_to(np.asarray(mem0.total_bytes, dtype=float), (p, len(layers)))
    per_recomputed = (np.asarray(mem_r1.total_bytes) - np.asarray(mem_r0.total_bytes)).reshape(p) - transient

    stages = []
    for i in range(p):
        f, b, g, gf, pg, pf, o = kinds[(i == 0, i == p - 1)]
        stages.append(
            StageTables(
                forward_s=f, backward_s=b, grad_s=g, grad_floor_s=gf, param_s=pg, param_floor_s=pf,
                optimizer_s=o, memory_bytes=memory[i].copy(),
                memory_per_recomputed_bytes=float(per_recomputed[i]) if full else 0.0,
                memory_transient_bytes=transient,
            )
        )
    return StageModel(
        config=config,
        num_layers=model.num_layers,
        num_stages=p,
        virtual_stages=vs,
        num_micro_batches=m,
        recompute_full=full,
        recompute_s=recompute_s,
        grad_window=grad_window,
        param_window=param_window,
        embedding_sync_s=float(np.asarray(tied_embedding_sync_s(problem, v))),
        capacity_bytes=capacity,
        stages=stages,
        period=align.period,
        deficit=align.deficit,
        moe=align.moe,
        batch_weight=config.batch_weight(task),
    )


def _shaped(v: PlanVars, shape: tuple[int, ...]) -> PlanVars:
    """Plan variables of K candidates reshaped to `shape` (K first) so that they broadcast
    against unit counts (and stage indices)."""
    from dataclasses import fields as dataclass_fields

    def reshape(x):
        return np.asarray(x).reshape(shape) if np.ndim(x) else x

    values = {f.name: reshape(getattr(v, f.name)) for f in dataclass_fields(v) if f.name != "strides"}
    return PlanVars(**values, strides={axis: reshape(x) for axis, x in v.strides.items()})


def stage_models(problem: Problem, candidates) -> list[StageModel]:
    """`stage_model` of every candidate (a planner.llm.candidates.CandidateSet), priced in bulk:
    candidates with the same PP and virtual stages share one array call per stage kind, with
    the candidates on a first axis (the same cost functions, on arrays of shape
    (candidates, stages, units)). Equal to `stage_model` up to floating-point rounding."""
    from planner.llm.candidates import plan_vars

    model, task, cluster = problem.model, problem.task, problem.cluster
    align = alignment(model)
    result: list[StageModel | None] = [None] * len(candidates)
    keys = candidates.pp.astype(np.int64) * 65536 + candidates.virtual_stages
    for key in np.unique(keys):
        members = np.flatnonzero(keys == key)
        group = candidates.take(members)
        n = len(members)
        p, vs = int(group.pp[0]), int(group.virtual_stages[0])
        v = _shaped(plan_vars(group), (n, 1, 1))
        layer = block_costs(problem, v)
        edges = edge_cost(problem, v, layer.tokens)
        m = group.num_micro_batches(task)
        weights = group.batch_weight(task)
        step = vs * align.period
        layers = np.arange(0, model.num_layers + 1, step, dtype=float)
        units = np.arange(len(layers), dtype=float)
        shape = (n, len(layers))
        zeros = np.zeros_like(layers)
        full = group.recompute == RECOMPUTE_CODES["full"]
        capacity = cluster.device.hbm_bytes * (1.0 - task.memory_headroom)
        one = np.ones(1)

        def moe_of(first: bool, clamp: bool, units=units, vs=vs):
            if not align.moe:
                return 0
            moe = align.moe_layers(units, vs, first)
            return np.maximum(moe, 0.0) if clamp else moe

        kinds: dict[tuple[bool, bool], tuple] = {}
        recompute_s = np.zeros(n)
        grad_window = param_window = 0.0
        for first, last in {(i == 0, i == p - 1) for i in range(p)}:
            spec = StageSpec(index=0, layers=layers, recomputed=zeros, is_first=first, is_last=last,
                             moe_layers=moe_of(first, clamp=True))
            terms = stage_terms(problem, v, layer, edges, spec)
            raw = data_parallel_raw(problem, v, spec)
            grad_window, param_window = raw.grad_window, raw.param_window
            with_r = stage_terms(problem, v, layer, edges, StageSpec(0, one, one, first, last))
            without_r = stage_terms(problem, v, layer, edges, StageSpec(0, one, 0 * one, first, last))
            recompute_s = np.broadcast_to(np.asarray(with_r.backward_s - without_r.backward_s, dtype=float),
                                          (n, 1, 1)).reshape(n)

            def table(x, n=n, layers=layers, shape=shape):
                return np.broadcast_to(np.asarray(x, dtype=float), (n, 1, len(layers))).reshape(shape)

            kinds[(first, last)] = (
                table(terms.forward_s), table(terms.backward_s), table(raw.grad_s), table(raw.grad_floor_s),
                table(raw.param_s), table(raw.param_floor_s), table(raw.optimizer_s),
            )

        index = np.arange(p, dtype=float)[:, None]
        first_mask = index == 0
        last_mask = index == p - 1
        grid = np.broadcast_to(layers[None, :], (p, len(layers)))
        moe_grid = 0
        if align.moe:
            moe_grid = np.where(first_mask, moe_of(True, clamp=False)[None, :], moe_of(False, clamp=False)[None, :])
        m3 = m.reshape(n, 1, 1)
        mem0 = stage_memory(problem, v, layer, grid, 0 * grid, index, first_mask, last_mask, m3, edges.logits_bytes,
                            moe_grid)
        ones = np.ones((p, 1))
        mem_r0 = stage_memory(problem, v, layer, ones, 0 * ones, index, first_mask, last_mask, m3, edges.logits_bytes)
        mem_r1 = stage_memory(problem, v, layer, ones, ones, index, first_mask, last_mask, m3, edges.logits_bytes)
        transient = np.broadcast_to(np.asarray(layer.recomputed("activation_none_bytes"), dtype=float),
                                    (n, 1, 1)).reshape(n)
        memory = np.broadcast_to(np.asarray(mem0.total_bytes, dtype=float), (n, p, len(layers)))
        per_recomputed = (np.broadcast_to(np.asarray(mem_r1.total_bytes) - np.asarray(mem_r0.total_bytes),
                                          (n, p, 1)).reshape(n, p) - transient[:, None])
        sync = np.broadcast_to(np.asarray(tied_embedding_sync_s(problem, v), dtype=float), (n, 1, 1)).reshape(n)
        for k, position in enumerate(members.tolist()):
            is_full = bool(full[k])
            stages = []
            for i in range(p):
                f, b, g, gf, pg, pf, o = (x[k].copy() for x in kinds[(i == 0, i == p - 1)])
                stages.append(StageTables(
                    forward_s=f, backward_s=b, grad_s=g, grad_floor_s=gf, param_s=pg, param_floor_s=pf,
                    optimizer_s=o, memory_bytes=memory[k, i].copy(),
                    memory_per_recomputed_bytes=float(per_recomputed[k, i]) if is_full else 0.0,
                    memory_transient_bytes=float(transient[k]) if is_full else 0.0,
                ))
            result[position] = StageModel(
                config=candidates.plan(int(position)), num_layers=model.num_layers, num_stages=p,
                virtual_stages=vs, num_micro_batches=int(m[k]), recompute_full=is_full,
                recompute_s=float(recompute_s[k]) if is_full else 0.0, grad_window=grad_window,
                param_window=param_window, embedding_sync_s=float(sync[k]), capacity_bytes=capacity,
                stages=stages, period=align.period, deficit=align.deficit, moe=align.moe,
                batch_weight=float(weights[k]),
            )
    return result


def step_time_s(sm: StageModel, chunks: list[int], recomputed: list[int]) -> tuple[float, float]:
    """(step seconds, peak memory bytes) of a partition, from the tables (used by tests and
    heuristics; the exact value always comes from planner.llm.cost.step.evaluate)."""
    t, f_tot, b_tot = [], [], []
    grad = param = opt = 0.0
    slack_b = slack_f = 0.0
    peak = 0.0
    for i, (c, r) in enumerate(zip(chunks, recomputed, strict=True)):
        st = sm.stages[i]
        f = st.forward_s[c]
        b = st.backward_s[c] + r * sm.recompute_s
        t.append(f + b)
        grad = max(grad, max(st.grad_s[c] - sm.grad_window * b, st.grad_floor_s[c]) - slack_b)
        param = max(param, max(st.param_s[c] - sm.param_window * f, st.param_floor_s[c]) - slack_f)
        opt = max(opt, st.optimizer_s[c])
        slack_b += b
        slack_f += f
        mem = st.memory_bytes[c] + r * st.memory_per_recomputed_bytes + (st.memory_transient_bytes if r > 0 else 0.0)
        peak = max(peak, mem)
        f_tot.append(f)
        b_tot.append(b)
    tmax = max(t)
    total = sm.num_micro_batches * tmax + (sum(t) - tmax) / sm.virtual_stages
    return total + grad + param + sm.embedding_sync_s + opt, peak


def step_times_s(sm: StageModel, chunks: list[int], recomputed: np.ndarray) -> np.ndarray:
    """`step_time_s` of one partition under K recompute vectors at once (`recomputed` of shape
    (K, stages)): step seconds per row, inf where a stage does not fit."""
    r = np.asarray(recomputed, dtype=float)
    pick = [(st, c) for st, c in zip(sm.stages, chunks, strict=True)]
    f = np.array([st.forward_s[c] for st, c in pick])
    b = np.array([st.backward_s[c] for st, c in pick])[None, :] + r * sm.recompute_s
    t = f[None, :] + b
    tmax = np.max(t, axis=1)
    pipeline = sm.num_micro_batches * tmax + (np.sum(t, axis=1) - tmax) / sm.virtual_stages
    g = np.array([st.grad_s[c] for st, c in pick])
    gf = np.array([st.grad_floor_s[c] for st, c in pick])
    pg = np.array([st.param_s[c] for st, c in pick])
    pf = np.array([st.param_floor_s[c] for st, c in pick])
    slack_b = np.cumsum(b, axis=1) - b
    slack_f = np.cumsum(f) - f
    grad = np.maximum(0.0, np.max(np.maximum(g[None, :] - sm.grad_window * b, gf[None, :]) - slack_b, axis=1))
    param = max(0.0, float(np.max(np.maximum(pg - sm.param_window * f, pf) - slack_f)))
    opt = max(float(st.optimizer_s[c]) for st, c in pick)
    memory = (np.array([st.memory_bytes[c] for st, c in pick])[None, :]
              + r * np.array([st.memory_per_recomputed_bytes for st, _ in pick])[None, :]
              + (r > 0) * np.array([st.memory_transient_bytes for st, _ in pick])[None, :])
    fits = np.all(memory <= sm.capacity_bytes, axis=1)
    return np.where(fits, pipeline + grad + param + sm.embedding_sync_s + opt, np.inf)


def improve_recompute(sm: StageModel, chunks: list[int], recomputed: list[int]) -> tuple[float, list[int]]:
    """(step seconds, recompute counts) from `recomputed` (counts that fit) by adding one
    recomputed layer at a time where it shortens the step most: a longer backward hides more of a
    stage's gradient reduction and of the later stages' (the step's exposed data-parallel time),
    at the price of that stage's time. A heuristic for incumbents; stops when no single layer
    helps."""
    current = np.asarray(recomputed, dtype=float)
    best = float(step_times_s(sm, chunks, current[None, :])[0])
    if not sm.recompute_full:
        return best, [int(x) for x in current]
    room = np.array([sm.recomputable(i, c) for i, c in enumerate(chunks)], dtype=float)
    eye = np.eye(len(chunks))
    while True:
        trials = current[None, :] + eye
        value = step_times_s(sm, chunks, trials)
        value = np.where(trials.diagonal() <= room, value, np.inf)
        k = int(np.argmin(value))
        if not value[k] < best * (1 - 1e-12):
            return best, [int(x) for x in current]
        best, current = float(value[k]), trials[k]


def balanced_chunks(chunks: int, p: int, min_first: int = 1) -> list[int]:
    """Chunks (units) per stage as equal as possible; the remainder goes to the middle stages
    first (the edge stages carry the embedding and the LM head). Stage 0 holds at least
    `min_first` (an MoE model's dense prefix); if it would hold fewer, it holds `min_first` and
    the other stages share the rest the same way (planner.llm.candidates.balanced_runs)."""
    base, extra = divmod(chunks, p)
    counts = [base] * p
    order = list(range(1, p - 1)) + [p - 1, 0] if p > 2 else list(range(p))
    for i in order[:extra]:
        counts[i] += 1
    if p > 1 and counts[0] < min_first:
        rest = chunks - min_first
        base, extra = divmod(rest, p - 1)
        counts = [min_first] + [base] * (p - 1)
        order = list(range(1, p - 1)) + [p - 1] if p > 2 else [1]
        for i in order[:extra]:
            counts[i] += 1
    return counts


def aligned_layers(model, pp: int, v: int) -> list[int] | None:
    """Layers per stage of the balanced aligned split (`balanced_chunks` over units of v*P
    layers, stage 0 holding the dense prefix); None if no aligned split exists."""
    align = alignment(model)
    if not align.admits(model.num_layers, pp, v):
        return None
    units = align.units(model.num_layers, v)
    return [u * v * align.period for u in balanced_chunks(units, pp, align.min_first_units)]


def plan_with_partition(sm: StageModel, chunks: list[int], recomputed: list[int]) -> Plan:
    """The configuration with a concrete stage partition (units per stage) and per-stage
    recompute counts."""
    layers = [c * sm.unit_layers for c in chunks]
    update: dict = {"stage_layers": layers}
    if sm.recompute_full:
        update["recompute_num_layers"] = list(recomputed)
    return sm.config.model_copy(update=update)

