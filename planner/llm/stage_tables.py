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

Tables are indexed by l / v = 0 .. L / v and computed by `planner.llm.cost` itself (stage_terms,
data_parallel_raw, stage_memory on numpy arrays), so the solvers never re-derive a formula.
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

from planner.llm.cost.edges import edge_cost
from planner.llm.cost.blocks import block_costs
from planner.llm.cost.layout import PlanVars
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

    @property
    def chunks(self) -> int:
        """L / v: the number of model chunks to distribute."""
        return self.num_layers // self.virtual_stages


def stage_model(problem: Problem, config: Plan) -> StageModel:
    """Prices every stage of `config` for every admissible layer count.

    Time and data-parallel tables depend only on whether a stage is first, last or in the
    middle, so they are priced once per kind; memory depends on the stage index (micro-batches
    in flight) and is priced for all stages in one array call.
    """
    model, task, cluster = problem.model, problem.task, problem.cluster
    v = PlanVars.from_plan(config)
    layer = block_costs(problem, v)
    edges = edge_cost(problem, v, layer.tokens)
    p, vs = config.pp, config.virtual_stages
    m = config.num_micro_batches(task.num_sequences)
    layers = np.arange(0, model.num_layers + 1, vs, dtype=float)
    zeros = np.zeros_like(layers)
    full = config.recompute == "full"
    capacity = cluster.device.hbm_bytes * (1.0 - task.memory_headroom)
    one = np.ones(1)

    kinds: dict[tuple[bool, bool], tuple] = {}
    recompute_s = grad_window = param_window = 0.0
    for first, last in {(i == 0, i == p - 1) for i in range(p)}:
        spec = StageSpec(index=0, layers=layers, recomputed=zeros, is_first=first, is_last=last)
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
    mem0 = stage_memory(problem, v, layer, grid, 0 * grid, index, first_mask, last_mask, m, edges.logits_bytes)
    ones = np.ones((p, 1))
    mem_r0 = stage_memory(problem, v, layer, ones, 0 * ones, index, first_mask, last_mask, m, edges.logits_bytes)
    mem_r1 = stage_memory(problem, v, layer, ones, ones, index, first_mask, last_mask, m, edges.logits_bytes)
    transient = float(np.asarray(layer.largest("activation_none_bytes"))) if full else 0.0
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
    )


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


def balanced_chunks(chunks: int, p: int) -> list[int]:
    """Chunks per stage as equal as possible; the remainder goes to the middle stages first
    (the edge stages carry the embedding and the LM head)."""
    base, extra = divmod(chunks, p)
    counts = [base] * p
    order = list(range(1, p - 1)) + [p - 1, 0] if p > 2 else list(range(p))
    for i in order[:extra]:
        counts[i] += 1
    return counts


def plan_with_partition(sm: StageModel, chunks: list[int], recomputed: list[int]) -> Plan:
    """The configuration with a concrete stage partition and per-stage recompute counts."""
    layers = [c * sm.virtual_stages for c in chunks]
    update: dict = {"stage_layers": layers}
    if sm.recompute_full:
        update["recompute_num_layers"] = list(recomputed)
    return sm.config.model_copy(update=update)

