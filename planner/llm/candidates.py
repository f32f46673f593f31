"""Configurations in bulk: a `CandidateSet` holds the decisions of many uniform-stage plans as
numpy columns (planner.llm.space enumerates the declared space into one), and `price` evaluates
thousands of them at once by running the *same* cost functions as
`planner.llm.cost.step.evaluate` on numpy arrays (one entry per candidate), with the pipeline
described by three stage classes: the first stage, the middle stages (identical) and the last
stage.

MoE models (`family: moe`): the expert decisions (EP, ETP, token dispatcher, EP overlap) are
columns of the space like the others (planner.llm.space.expert_choices), and the stage partitions searched are
the *aligned* ones (`Alignment`): with P the period of the MoE layers and v the virtual
stages, every stage holds a multiple of v*P layers (its "units"), and stage 0's first chunk
holds the whole dense prefix. Then stage i holds exactly v*u_i - [i == 0]*K MoE blocks (u_i
units, K = `Alignment.deficit`), an affine function of u_i, so the stage tables stay exact.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields

import numpy as np

from planner.llm.cost.layout import AXES, DISPATCHER_CODES, RECOMPUTE_CODES, PlanVars
from planner.llm.cost.step import StageSpec, assemble
from planner.llm.plan import Plan
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
        own = [p.summary() for p in plans if p.recompute_modules is not None]
        if own:  # the columns price Megatron's default module set only
            raise ValueError(f"bulk pricing has no recompute_modules column; price {own[0]} with evaluate")

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
