"""The exact planner: CP-SAT over configurations, stage partitions and recompute, in rounds.

Phases (Python, valid bounds only; planner.llm.bounds documents each):
  1. The best heuristic plan (megatron-rules, fsdp-only, greedy; reused from
     SolveOptions.heuristic_results when given) is the incumbent U.
  2. The declared space is enumerated (planner.llm.space.enumerate_within): every
     configuration k = (TP, SP, TP overlap, CP, PP, v, DP, ZeRO stage, HSDP shard, micro-batch,
     recompute mode, axis order) that passes the divisibility rules and the task's constraints;
     exact duplicates are dropped (`dominance_filter`).
  3. Every configuration gets a time lower bound LB_k; those with LB_k > U are dropped (they
     cannot be optimal). The uniform split of each one left is priced for a better incumbent.
  4. Rounds: at most `max_configs` configurations with the smallest LB_k (and at most
     STAGE_BUDGET stages) are priced into tables (planner.llm.stage_tables), those whose memory lower
     bound exceeds the usable memory dropped, and the rest solved as one CP-SAT model
     (solvers.cpsat_model, whose docstring holds the formulation) that asks for a plan strictly
     better than U. A proven round settles its configurations. A round also holds at most
     `round_value_budget` stage-domain values for the time left; a configuration too large
     for any round (thousands of layers) is left open, its lower bound kept in the bound.
The incumbent is optimal once every configuration is settled or bounded above it.

MoE models (`family: moe`; planner.llm.space documents the space): each configuration also
carries EP, ETP, the token dispatcher and EP overlap (exact duplicates: every dispatcher of a
one-GPU expert group; full recompute covers "none" except with EP overlap, which excludes full
recompute). The declared partitions are the *aligned* ones (planner.llm.candidates.Alignment):
every virtual chunk holds a multiple of P layers (P the period of the MoE layers) and stage 0's
first chunk the whole dense prefix, so that stage i of u_i units holds exactly v u_i - [i = 0] K
MoE blocks, and full recompute covers at most those; other partitions of such models are not
searched (a plan with one is still priced by estimate). A model whose explicit layer pattern is
not a dense prefix followed by every P-th layer is refused (bad input).

Three steps between the bounds and the rounds (all models; dense models since 2026-12-01, see
TABLE_BOUNDS_FOR_DENSE):
  3b. Warm start: the configurations in bound order are priced into stage tables in bulk
     (planner.llm.stage_tables.stage_models) and bounded from them
     (planner.llm.bounds.pipeline_lower_bound: the pipeline part minimized exactly over
     partitions, each stage at the least time at which it fits, plus the data-parallel time the
     first two stages leave exposed, and, given U, every stage's exposure against the most
     backward time the stages before it can take), until WARM_CONFIGS could still beat U; the
     balanced split and the bound's own partition of each, with recomputed layers added where
     they hide more of the exposed reduction than they cost (improve_recompute), are tried as
     incumbents. A configuration whose tables equal those of one taken before it (an axis order
     that prices the same) is skipped: its plans are priced as that one's.
  4b. In the rounds, a configuration whose table bound exceeds U is dropped before CP-SAT, and
     the bound of the others is raised to it (the cut obj >= LB_k x_k).
  4c. Stage domains also exclude unit counts whose least fitting stage time alone makes the
     step slower than U (solvers.cpsat_model.stage_domains).

Deadline and Ctrl-C (solvers.budget): every phase polls the budget and stops early. The result
is then the incumbent with the best bound proven so far: the smallest of the bounds of the
configurations not settled, where a configuration not yet enumerated or bounded has the
trivially valid bound 0. With no incumbent the status is UNKNOWN, with a note saying whether
time ran out or Ctrl-C stopped the search.

Determinism: with a fixed seed and worker count, the phases are deterministic except where the
deadline cuts them (how far the enumeration, heuristics, bounds and rounds got) and CP-SAT's
parallel search (with several workers the first of two equally good plans may differ between
runs; one worker is deterministic up to the time limit).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
from ortools.sat.python import cp_model

from planner.llm.bounds import memory_lower_bound, pipeline_lower_bound, screened_lower_bound_within
from planner.llm.candidates import CandidateSet, alignment, price
from planner.llm.cost.step import evaluate
from planner.llm.plan import Plan
from planner.llm.problem import Problem
from planner.llm.space import enumerate_within
from planner.llm.stage_tables import (
    StageModel,
    balanced_chunks,
    improve_recompute,
    plan_with_partition,
    stage_model,
    stage_models,
)
from solvers.base import SolveOptions, SolveResult
from solvers.budget import NOTE_INTERRUPTED, Budget, catch_sigint, run_cpsat
from solvers.cpsat_model import (  # noqa: F401 (lower_hull, stage_domains re-exported)
    LCM_V,
    MAX_TABLE_ENTRIES,
    ROUND_VALUES_MAX,
    SCALE_MAX,
    UNIT_S,
    RoundModel,
    build_model,
    lower_hull,
    objective_scale,
    round_values,
    rounding_bound_s,
    stage_domains,
    table_entries,
)
from solvers.heuristics import best_heuristic

_EXTRA_PARAMETERS: dict = {}  # experiments only
STAGE_BUDGET = 400  # stages (summed over configurations) per CP-SAT round
TABLE_BOUNDS_FOR_DENSE = True
"""Use the table bounds, the warm start and bulk tables (3b, 4b, 4c) for dense models too (on
since 2026-12-01; off reproduces the earlier dense search, kept for the benchmark's side-by-side
figures: benchmarks/solve_scaling.py --old-path)."""
WARM_CONFIGS = 60  # MoE: configurations whose cheap incumbents are priced before the rounds
WARM_SHARE = 0.2  # ... in at most this share of the time left
PREFETCH = 64  # MoE: configurations priced into tables together (planner.llm.stage_tables.stage_models)
PREFETCH_ENTRIES = 200_000  # ... holding at most this many table entries (stages x units) in all
STAGE_BUDGET_MIN = 48  # ... at least, however little time is left
STAGE_BUDGET_FULL_S = 3.0  # ... all of STAGE_BUDGET from this many seconds left
ROUND_VALUES_MIN = 2_000  # stage-domain values a round may always hold (see round_value_budget)
VALUES_PER_S = 4_000  # ... more per second left, up to ROUND_VALUES_MAX
HEURISTIC_SHARE = 0.5  # of the time left, at most, for the heuristics (they take ~0.1 s)
PRICE_CHUNK = 32_768
SCREENED_UNIFORM = 60_000  # configurations whose uniform split is priced between the bounds' two passes



def _log_to_stderr(line: str) -> None:
    """CP-SAT's search log (--log), on standard error."""
    print(line, file=sys.stderr)

def distinct_recompute_modes(problem: Problem, ep_overlap: bool = False) -> list[str]:
    """The task's recompute modes less those that only duplicate another mode's plans.

    Full recompute with per-stage counts includes "none" (every count 0): identical time and
    memory. With flash attention "selective" is identical to "none" (flash already recomputes
    its scores). Dropping these duplicates loses no plan. `ep_overlap`: the modes of
    configurations with EP overlap, which excludes full recompute (so "none" stays).
    """
    allowed = list(problem.task.constraints.recompute)
    if ep_overlap:
        allowed = [mode for mode in allowed if mode != "full"]
    flash = problem.task.framework.attention == "flash"
    dropped = set()
    if "full" in allowed:
        dropped.add("none")
        if flash:
            dropped.add("selective")
    elif flash and "none" in allowed:
        dropped.add("selective")
    return [mode for mode in allowed if mode not in dropped]


def round_value_budget(remaining_s: float) -> int:
    """The most `round_values` a round may hold with `remaining_s` seconds left. Ordinary
    rounds hold a few hundred to about a thousand; tens of thousands only arise from models with
    thousands of layers, where CP-SAT spends ~0.1 ms per value (measured on 2 cores) in a
    presolve that ignores its time limit and stop requests, and then rarely finds any solution."""
    return int(min(ROUND_VALUES_MAX, max(ROUND_VALUES_MIN, VALUES_PER_S * remaining_s)))


def round_stage_budget(remaining_s: float) -> int:
    """Stages per round: STAGE_BUDGET, fewer when little time is left (a large round needs
    about a second before CP-SAT has any answer; a smaller one can still finish)."""
    return int(min(STAGE_BUDGET, max(STAGE_BUDGET_MIN, STAGE_BUDGET * remaining_s / STAGE_BUDGET_FULL_S)))


def dominance_filter(problem: Problem, candidates) -> np.ndarray:
    """Mask of configurations kept after removing exact duplicates (`distinct_recompute_modes`;
    with EP overlap, which excludes full recompute, those of `ep_overlap=True`)."""
    from planner.llm.cost.layout import RECOMPUTE_CODES

    codes = [RECOMPUTE_CODES[mode] for mode in distinct_recompute_modes(problem)]
    keep = np.isin(candidates.recompute, codes)
    overlap = candidates.ep_comm_overlap == 1
    if overlap.any():
        overlap_codes = [RECOMPUTE_CODES[mode] for mode in distinct_recompute_modes(problem, ep_overlap=True)]
        keep = np.where(overlap, np.isin(candidates.recompute, overlap_codes), keep)
    return keep


def _in_space(problem: Problem, plan: Plan) -> bool:
    """Whether a plan's stage partition is one the search declares (MoE: aligned)."""
    align = alignment(problem.model)
    if not align.moe:
        return True
    return align.aligned(plan.layers_per_stage(problem.model.num_layers), plan.virtual_stages)


class _Search:
    """The state of one solve, valid after every step: what a Ctrl-C or the deadline returns."""

    def __init__(self, problem: Problem, options: SolveOptions, budget: Budget, start: float):
        self.problem, self.options, self.budget, self.start = problem, options, budget, start
        self.stats: dict = {"rounds": 0}
        self.candidates: CandidateSet | None = None
        self.enumerated = False  # the whole space is in `candidates`
        self.lower: np.ndarray | None = None  # per candidate; 0 where not bounded yet
        self.bounded = False  # every candidate has its real bound
        self.order: list[int] = []
        self.position = 0  # order[:position] are taken (settled or pending)
        self.pending: list[float] = []  # bounds of taken configurations whose round is not proven
        self.open_bound = math.inf  # bound of configurations left open by unfinished rounds
        self.incumbent: Plan | None = None
        self.upper = math.inf
        self.rounding = 0.0
        self.unit_s = UNIT_S  # the coarsest time unit of any round
        self.cut_s = UNIT_S / LCM_V  # the largest objective unit (seconds) of any round: one strict-improvement cut
        self.pruned_memory = 0
        self.pruned_table = 0
        # MoE models: configurations are also bounded from their stage tables before a round
        # (planner.llm.bounds.pipeline_lower_bound); dense models keep their search unchanged.
        self.table_bounds = alignment(problem.model).moe or TABLE_BOUNDS_FOR_DENSE
        self.carried: dict[int, StageModel] = {}  # priced, but left for the next round
        self.tight: dict[int, float] = {}  # table bounds of configurations in `carried`
        self.seen: dict[bytes, int] = {}  # tables fingerprint -> the configuration first taken with them
        self.duplicate_of: dict[int, int] = {}  # configurations whose tables equal an earlier one's
        self.duplicates = 0

    # -- phases ------------------------------------------------------------------------------

    def run(self) -> None:
        self.heuristics()  # first: a plan even when time is short
        self.report("heuristics")
        self.enumerate()
        self.report("enumerated")
        if not self.enumerated or len(self.candidates) == 0:
            return
        self.bounds()
        self.report("bounded")
        self.uniform_split()
        self.warm_start()
        self.report("warm start")
        self.rounds()

    def report(self, phase: str) -> None:
        """A progress event (SolveOptions.progress), if anyone listens."""
        listener = self.options.progress
        if listener is None:
            return
        left = None
        if self.lower is not None:
            rest = np.asarray(self.order[self.position :], dtype=np.int64)
            left = int(np.count_nonzero(self.lower[rest] <= self.upper * (1 + 1e-12))) + len(self.pending)
        bound = self.open_lower() if self.lower is not None else None
        if bound is not None and not math.isfinite(bound):
            bound = self.upper if math.isfinite(self.upper) else None
        try:
            listener({
                "phase": phase,
                "configurations": len(self.candidates) if self.candidates is not None else None,
                "left": left, "rounds": self.stats.get("rounds", 0),
                "best_s": self.upper if math.isfinite(self.upper) else None,
                "bound_s": None if bound is None else min(bound, self.upper),
                "elapsed_s": time.perf_counter() - self.start,
            })
        except (OSError, ValueError):  # a closed terminal must not stop the search
            pass

    def enumerate(self) -> None:
        mark = time.perf_counter()
        modes = distinct_recompute_modes(self.problem)
        if alignment(self.problem.model).moe:
            # EP overlap excludes full recompute, so its "none" rows are no duplicates: they
            # keep the modes of distinct_recompute_modes(ep_overlap=True).
            counts: dict = {}
            self.candidates, self.enumerated = enumerate_within(
                self.problem, options=self.options.space, stop=self.budget.expired, recompute=modes,
                overlap_recompute=distinct_recompute_modes(self.problem, ep_overlap=True), counts=counts)
            self.stats["configurations"] = counts["listed"]
            self.stats["duplicates_removed"] = counts["listed"] - len(self.candidates)
            self.stats["enumerate_s"] = time.perf_counter() - mark
            return
        self.candidates, self.enumerated = enumerate_within(self.problem, options=self.options.space,
                                                            stop=self.budget.expired, recompute=modes)
        # Every recompute mode multiplies the same set of other decisions, so the duplicates
        # left out number (all modes - kept modes) / kept modes per configuration kept.
        num_modes = len(self.problem.task.constraints.recompute)
        removed = len(self.candidates) * (num_modes - len(modes)) // max(len(modes), 1)
        self.stats["configurations"] = len(self.candidates) + removed
        self.stats["duplicates_removed"] = removed
        self.stats["enumerate_s"] = time.perf_counter() - mark

    def heuristics(self) -> None:
        mark = time.perf_counter()
        heuristic = best_heuristic(self.problem, self.options, self.budget.share(HEURISTIC_SHARE),
                                   in_space=lambda plan: _in_space(self.problem, plan))
        if heuristic is not None:
            self.incumbent, self.upper = heuristic.plan, heuristic.objective_s
        self.stats["heuristic"] = heuristic.solver if heuristic else None
        self.stats["heuristics_s"] = time.perf_counter() - mark

    def bounds(self) -> None:
        if self.budget.expired():
            return
        mark = time.perf_counter()
        self.lower, done = screened_lower_bound_within(self.problem, self.candidates, self.upper,
                                                       improve=self._screened_incumbent, stop=self.budget.expired)
        self.bounded = done == len(self.candidates)
        self.stats["bounds_s"] = time.perf_counter() - mark
        self.stats["cannot_fit"] = int(np.isinf(self.lower).sum())
        self.order = np.argsort(self.lower, kind="stable").tolist()

    def _screened_incumbent(self, screen: np.ndarray) -> float:
        """Between the two passes of the bounds: the uniform split of the SCREENED_UNIFORM
        configurations with the least screen, priced in bulk, as an incumbent (a good one makes
        the full bounds' pass cheaper: it only runs where the screen is below it)."""
        count = min(SCREENED_UNIFORM, len(screen))
        if count == 0 or self.budget.expired():
            return self.upper
        best = np.argpartition(screen, count - 1)[:count]
        self._try_uniform(best[screen[best] <= self.upper], "uniform split (screened)")
        return self.upper

    def uniform_split(self) -> None:
        """A better incumbent from the uniform split of every configuration still in the window
        (priced in bulk by the cost model; only evenly divisible configurations)."""
        if self.lower is None or self.budget.expired():
            return
        self._try_uniform(np.flatnonzero(self.lower <= self.upper), "uniform split")

    def _try_uniform(self, window: np.ndarray, label: str) -> None:
        """The fastest fitting uniform split among these configurations, if better, is the
        incumbent."""
        c = self.candidates
        num_layers = self.problem.model.num_layers
        even = window[num_layers % (c.pp[window] * c.virtual_stages[window]) == 0]
        align = alignment(self.problem.model)
        if align.moe:  # only aligned uniform splits are in the space (and priced exactly)
            chunk = num_layers // (c.pp[even] * c.virtual_stages[even])
            even = even[(chunk % align.period == 0) & (chunk // align.period >= align.min_first_units)]
        best_step, best_index = math.inf, None
        for begin in range(0, len(even), PRICE_CHUNK):
            if self.budget.expired():
                break
            part = even[begin : begin + PRICE_CHUNK]
            priced = price(self.problem, c.take(part))
            fits = np.flatnonzero(priced.fits)
            if len(fits):
                value = priced.step_s * c.batch_weight(self.problem.task)[part]
                best = fits[int(np.argmin(value[fits]))]
                if value[best] < best_step:
                    best_step, best_index = float(value[best]), int(part[best])
        if best_index is not None and best_step < self.upper:
            plan = c.plan(best_index)
            self.incumbent, self.upper = plan, objective_of(self.problem, plan)
            self.stats["incumbent"] = label

    def _stage_model(self, i: int, position: int) -> StageModel:
        """The stage model of candidate i (at `position` in the order): from the cache, else
        MoE models price it with the next PREFETCH candidates in order in bulk."""
        sm = self.carried.pop(i, None)
        if sm is not None:
            return sm
        if not self.table_bounds:
            return stage_model(self.problem, self.candidates.plan(i))
        num_layers = self.problem.model.num_layers
        ahead, entries = [i], table_entries(self.candidates.plan(i), num_layers)
        for j in self.order[position : position + PREFETCH]:
            if j == i or j in self.carried or not math.isfinite(self.lower[j]) or self.lower[j] > self.upper:
                continue
            size = table_entries(self.candidates.plan(j), num_layers)
            if entries + size > PREFETCH_ENTRIES:
                break
            ahead.append(j)
            entries += size
        for j, model in zip(ahead, stage_models(self.problem, self.candidates.take(np.asarray(ahead))), strict=True):
            self.carried[j] = model
        return self.carried.pop(i)

    def warm_start(self) -> None:
        """MoE models: before any round, the configurations in bound order are priced into
        tables (in bulk) and bounded from them (planner.llm.bounds.pipeline_lower_bound; kept
        for the rounds) until WARM_CONFIGS of them could still beat the incumbent; their cheap
        incumbents (balanced split, and the bound's own partition) give the rounds a good upper
        bound."""
        if not self.table_bounds or self.lower is None:
            return
        mark = time.perf_counter()
        budget = self.budget.share(WARM_SHARE)
        viable = 0
        for position, i in enumerate(self.order):
            if viable >= WARM_CONFIGS or budget.expired():
                break
            if not math.isfinite(self.lower[i]) or self.lower[i] > self.upper:
                break
            if table_entries(self.candidates.plan(i), self.problem.model.num_layers) > MAX_TABLE_ENTRIES:
                continue
            sm = self._stage_model(i, position)
            if self._duplicate(i, sm):
                continue  # skipped again, without its tables, when its round comes
            self.tight[i], partition = weighted_pipeline_bound(sm, self.upper)
            if self.tight[i] >= self.upper:
                continue  # pruned when its round comes, without its tables
            self.carried[i] = sm
            viable += 1
            for guess in (balanced_guess(sm), partition_guess(sm, partition)):
                if guess is not None and guess[0] < self.upper * (1 - 1e-12):
                    self.upper, self.incumbent = guess[0], plan_with_partition(sm, guess[1], guess[2])
                    self.stats["incumbent"] = "warm start"
        self.stats["warm_start_s"] = time.perf_counter() - mark

    def rounds(self) -> None:
        if self.lower is None:
            return
        problem, options, budget = self.problem, self.options, self.budget
        lower, order = self.lower, self.order
        while not budget.expired():
            batch: list[StageModel] = []
            bounds: list[float] = []
            stages_in_batch = 0
            stage_budget = round_stage_budget(budget.remaining())
            value_budget = round_value_budget(budget.remaining())
            values_in_batch = 0
            while (self.position < len(order) and len(batch) < options.max_configs
                   and stages_in_batch < stage_budget):
                if budget.expired():
                    break
                i = order[self.position]
                if lower[i] > self.upper * (1 + 1e-12) or not math.isfinite(lower[i]):
                    self.position = len(order)  # every later one is bounded above the incumbent
                    break
                config = self.candidates.plan(i)
                if table_entries(config, problem.model.num_layers) > MAX_TABLE_ENTRIES:
                    self._leave_open(float(lower[i]))  # tables too large to build
                    continue
                self.position += 1
                if self.tight.get(i, -math.inf) >= self.upper:  # bounded by the warm start: nothing better in it
                    del self.tight[i]
                    self.pruned_table += 1
                    continue
                if i in self.duplicate_of:
                    self.duplicates += 1
                    continue
                self.pending.append(float(lower[i]))
                sm = self._stage_model(i, self.position - 1)
                if self._duplicate(i, sm):
                    self.pending.pop()
                    self.duplicates += 1
                    continue
                if memory_lower_bound(sm) > sm.capacity_bytes:
                    self.pruned_memory += 1
                    self.pending.pop()
                    continue
                if self.table_bounds:
                    tight = self.tight.pop(i, None)
                    if tight is None:
                        tight, partition = weighted_pipeline_bound(sm, self.upper)
                        guess = partition_guess(sm, partition)
                        if guess is not None and guess[0] < self.upper * (1 - 1e-12):
                            self.upper, self.incumbent = guess[0], plan_with_partition(sm, guess[1], guess[2])
                    if tight >= self.upper:  # no plan of this configuration beats the incumbent
                        self.pruned_table += 1
                        self.pending.pop()
                        continue
                    lower[i] = max(lower[i], tight)
                    self.pending[-1] = float(lower[i])
                size = round_values(sm, self.upper / sm.batch_weight)
                if size > value_budget:  # CP-SAT could not even load it in the time left
                    self.pending.pop()
                    self.position -= 1
                    self._leave_open(float(lower[i]))
                    continue
                if batch and (values_in_batch + size > value_budget
                              or objective_scale([*(b.virtual_stages for b in batch), sm.virtual_stages])
                              > SCALE_MAX
                              or sm.batch_weight != batch[0].batch_weight):  # one batch per round
                    self.pending.pop()
                    self.position -= 1
                    self.carried[i] = sm  # first of the next round
                    break
                batch.append(sm)
                bounds.append(float(lower[i]))
                stages_in_batch += sm.num_stages
                values_in_batch += size
            if not batch:
                break
            # A cheap incumbent from the batch itself: balanced chunks, least recompute that fits.
            for sm in batch:
                guess = balanced_guess(sm)
                if guess is not None and guess[0] < self.upper * (1 - 1e-12):
                    self.upper, self.incumbent = guess[0], plan_with_partition(sm, guess[1], guess[2])
            if budget.expired():
                break
            self.stats["rounds"] += 1
            # A round holds one global batch: its objective is the step time, compared with the
            # incumbent's time per reference batch through the batch weight (1 for a fixed batch).
            weight = batch[0].batch_weight
            built = build_model(batch, [b / weight for b in bounds], self.incumbent, upper_s=self.upper / weight)
            self.rounding = max(self.rounding, max(rounding_bound_s(sm, built.unit_s) for sm in batch))
            self.unit_s = max(self.unit_s, built.unit_s)
            self.cut_s = max(self.cut_s, built.unit_s / built.scale)
            cap = built.objective_cap(self.upper / weight)
            if cap is not None:
                built.model.add(built.obj <= cap)
            built.model.add_assumptions([built.a_memory])
            if budget.expired():
                break
            solver = cp_model.CpSolver()
            solver.parameters.num_workers = options.workers
            solver.parameters.random_seed = options.seed
            solver.parameters.log_search_progress = options.log
            if options.log:  # the log goes to standard error: standard output carries the result
                solver.parameters.log_to_stdout = False
                solver.log_callback = _log_to_stderr
            # Small rounds get full linearization: their per-configuration objective rows are
            # disjunctive (enforced by x_k) and without that LP the bound can creep up one unit at
            # a time; large rounds search faster with the default.
            if stages_in_batch <= 64:
                solver.parameters.linearization_level = 2
            for key, value in _EXTRA_PARAMETERS.items():
                setattr(solver.parameters, key, value)
            self.report(f"CP-SAT round {self.stats['rounds']}")
            status = run_cpsat(solver, built.model, budget)
            if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                self._decode(solver, built)
                if status == cp_model.FEASIBLE:
                    self.open_bound = min(self.open_bound,
                                          built.objective_s(solver.best_objective_bound) * weight)
                self.pending.clear()
            elif status == cp_model.INFEASIBLE:
                self.pending.clear()
            else:  # UNKNOWN: stopped before any answer; the batch stays open (pending)
                if status == cp_model.MODEL_INVALID:  # a bug: say why rather than hide it
                    self.stats["model_invalid"] = built.model.validate()
                break

    def _duplicate(self, i: int, sm: StageModel) -> bool:
        """Whether configuration i's tables equal those of a configuration taken before it (an
        axis order or layout that prices the same): every plan of i then has the price of a
        plan of that one, which its own round (or bound) settles, so i is skipped. Recorded
        the first time, so that a configuration is never its own duplicate."""
        if not self.table_bounds:
            return False
        key = fingerprint(sm)
        first = self.seen.setdefault(key, i)
        if first == i:
            return False
        self.duplicate_of[i] = first
        return True

    def _leave_open(self, bound: float) -> None:
        """Skip the configuration at `position`, too large for an exact round: it stays open."""
        self.position += 1
        self.open_bound = min(self.open_bound, bound)
        self.stats["too_large_for_a_round"] = self.stats.get("too_large_for_a_round", 0) + 1

    def _decode(self, solver: cp_model.CpSolver, built: RoundModel) -> None:
        chosen = next(cv for cv in built.configs if solver.boolean_value(cv.x))
        chunks = [int(solver.value(c)) for c in chosen.chunks]
        recomputed = [int(solver.value(r)) if not isinstance(r, int) else 0 for r in chosen.recomputed]
        self.incumbent = plan_with_partition(chosen.sm, chunks, recomputed)
        self.upper = built.objective_s(solver.objective_value) * chosen.sm.batch_weight

    # -- the answer ----------------------------------------------------------------------------

    def open_lower(self) -> float:
        """A valid lower bound on every plan not yet ruled out (inf: none is left)."""
        if not self.enumerated or self.lower is None:
            return 0.0
        values = [self.open_bound, *self.pending]
        if self.position < len(self.order):
            values.append(float(np.min(self.lower[self.order[self.position :]])))
        return min(values)

    def result(self) -> SolveResult:
        stats = self.stats
        stats.update(pruned_by_memory_bound=self.pruned_memory, rounding_bound_s=self.rounding)
        if self.table_bounds:
            stats["pruned_by_table_bound"] = self.pruned_table
            stats["duplicate_tables"] = self.duplicates
        if self.lower is not None:
            finite = np.isfinite(self.lower)
            stats["pruned_by_time_bound"] = int((finite & (self.lower > self.upper * (1 + 1e-12))).sum())
        interrupted = self.budget.interrupted
        open_lower = self.open_lower()
        if self.enumerated and self.candidates is not None and len(self.candidates) == 0:
            return self._infeasible(empty=True)
        if self.incumbent is None:
            if math.isinf(open_lower) and self.bounded:
                return self._infeasible(empty=False)
            limit = self.options.time_limit_s
            note = NOTE_INTERRUPTED if interrupted else f"no plan found within {limit:g} s"
            wall = time.perf_counter() - self.start
            return SolveResult(solver=CpSat.name, status="UNKNOWN", wall_time_s=wall, stats=stats,
                               notes=[note], interrupted=interrupted)
        plan = _simplify(self.problem, self.incumbent)
        proven = self.bounded and open_lower >= self.upper - self.rounding
        bound = self.upper if proven else min(self.upper, open_lower)
        notes = []
        if proven and self.unit_s > UNIT_S:
            # A coarse time unit: settled configurations are only known to be no better than the
            # incumbent minus the rounding bound (and one unit of the strict-improvement cut).
            proven = False
            bound = max(0.0, min(open_lower, self.upper - self.rounding - self.cut_s))
            notes.append(f"optimal up to the rounding bound {self.rounding:.3g} s of the time unit "
                         f"{self.unit_s:.3g} s (coarsened to fit CP-SAT's 64-bit integers)")
        stats["time_unit_s"] = self.unit_s
        if interrupted:
            notes.append("interrupted: best plan so far")
        if not (self.enumerated and self.bounded):
            notes.append("time ran out before every configuration was bounded: best bound 0")
        return _result(self.problem, plan, self.upper, bound, "OPTIMAL" if proven else "FEASIBLE",
                       time.perf_counter() - self.start, stats, notes, interrupted)

    def _infeasible(self, empty: bool) -> SolveResult:
        from solvers.diagnose import explain_empty_space, explain_infeasible

        budget = self.budget
        if budget.expired():
            why = ("no plan divides the problem or the task's constraints exclude every plan"
                   if empty else "no configuration can fit in memory")
            text = f"{why} (explanation skipped: {'interrupted' if budget.interrupted else 'time limit'})"
        else:
            try:
                if empty:
                    text = explain_empty_space(self.problem, self.options, budget)
                else:
                    text = explain_infeasible(self.problem, self.options, self.candidates, self.lower, budget)
            except KeyboardInterrupt:
                budget.interrupt()
                text = "no configuration can fit in memory (explanation skipped: interrupted)"
        wall = time.perf_counter() - self.start
        return SolveResult(solver=CpSat.name, status="INFEASIBLE", wall_time_s=wall, infeasibility=text,
                           stats=self.stats, interrupted=budget.interrupted)


def _result(problem, plan, objective, bound, status, wall, stats, notes, interrupted) -> SolveResult:
    if problem.task.batch_is_free:  # say the batch chosen, and what the objective is per
        stats["reference_batch"] = problem.task.num_sequences
        if plan.global_batch_size is None:
            plan = plan.model_copy(update={"global_batch_size": problem.task.num_sequences})
    gap = None if bound is None or objective <= 0 else max(0.0, (objective - bound) / objective)
    plan = plan.model_copy(update={"provenance": plan.provenance.model_copy(update={
        "solver": CpSat.name, "status": status, "objective_s": objective, "best_bound_s": bound,
        "gap": gap, "wall_time_s": wall, "problem_hash": problem.hash})})
    try:
        breakdown = evaluate(problem, plan)
    except KeyboardInterrupt:
        breakdown, interrupted = None, True
    return SolveResult(solver=CpSat.name, status=status, plan=plan, objective_s=objective, best_bound_s=bound,
                       wall_time_s=wall, breakdown=breakdown, stats=stats, notes=list(notes),
                       interrupted=interrupted)


class CpSat:
    name = "cpsat"
    exact = True

    def solve(self, problem: Problem, options: SolveOptions) -> SolveResult:
        """Enumeration, heuristics, bounds and CP-SAT rounds (see the module doc), all within
        the options' deadline; Ctrl-C returns the best plan so far with its bound."""
        start = time.perf_counter()
        budget = Budget.for_options(options, start)
        search = _Search(problem, options, budget, start)
        with catch_sigint(budget):
            try:
                search.run()
            except KeyboardInterrupt:
                budget.interrupt()
            return search.result()


def fingerprint(sm: StageModel) -> bytes:
    """A digest of everything a round or bound reads from a configuration's tables."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.array([sm.num_stages, sm.virtual_stages, sm.num_micro_batches, sm.batch_weight, sm.recompute_full,
                            sm.recompute_s, sm.grad_window, sm.param_window, sm.embedding_sync_s,
                            sm.capacity_bytes, sm.period, sm.deficit], dtype=float).tobytes())
    for st in sm.stages:
        for table in (st.forward_s, st.backward_s, st.grad_s, st.grad_floor_s, st.param_s, st.param_floor_s,
                      st.optimizer_s, st.memory_bytes):
            digest.update(np.ascontiguousarray(table).tobytes())
        digest.update(np.array([st.memory_per_recomputed_bytes, st.memory_transient_bytes]).tobytes())
    return digest.digest()


def objective_of(problem: Problem, plan: Plan) -> float:
    """The search's objective of a plan: its step time times its batch weight
    (`Plan.batch_weight`), i.e. the step time itself for a fixed batch, and with a free batch
    the time the plan takes per reference batch (the solver then maximizes tokens per second)."""
    return float(evaluate(problem, plan).step_time_s) * plan.batch_weight(problem.task)


def weighted_pipeline_bound(sm: StageModel, upper: float) -> tuple[float, list[int] | None]:
    """planner.llm.bounds.pipeline_lower_bound in the search's units (times the batch weight)."""
    bound, partition = pipeline_lower_bound(sm, upper / sm.batch_weight)
    return bound * sm.batch_weight, partition


def balanced_guess(sm: StageModel) -> tuple[float, list[int], list[int]] | None:
    """(step seconds times the batch weight, chunks, recomputed) of the balanced split with, per stage, the fewest
    recomputed layers that fit; None if it does not fit. Priced from the tables."""
    from planner.llm.stage_tables import step_time_s

    chunks = balanced_chunks(sm.chunks, sm.num_stages, sm.min_units(0))
    recomputed = []
    for i, (st, c) in enumerate(zip(sm.stages, chunks, strict=True)):
        base = st.memory_bytes[c]
        if base <= sm.capacity_bytes:
            recomputed.append(0)
            continue
        if not sm.recompute_full or st.memory_per_recomputed_bytes >= 0:
            return None
        layers = sm.recomputable(i, c)
        need = math.ceil((base + st.memory_transient_bytes - sm.capacity_bytes) / -st.memory_per_recomputed_bytes)
        if need > layers:
            return None
        recomputed.append(need)
    total, peak = step_time_s(sm, chunks, recomputed)
    if peak > sm.capacity_bytes:
        return None
    total, recomputed = improve_recompute(sm, chunks, recomputed)
    return total * sm.batch_weight, chunks, recomputed


def partition_guess(sm: StageModel, units: list[int] | None) -> tuple[float, list[int], list[int]] | None:
    """(step seconds times the batch weight, units, recomputed) of a given partition (that of
    planner.llm.bounds.pipeline_lower_bound) with, per stage, the fewest recomputed layers
    that fit; None if it does not fit. Priced from the tables."""
    from planner.llm.stage_tables import step_time_s

    if units is None:
        return None
    recomputed = []
    for i, (st, c) in enumerate(zip(sm.stages, units, strict=True)):
        if st.memory_bytes[c] <= sm.capacity_bytes:
            recomputed.append(0)
            continue
        if not sm.recompute_full or st.memory_per_recomputed_bytes >= 0:
            return None
        need = math.ceil((st.memory_bytes[c] + st.memory_transient_bytes - sm.capacity_bytes)
                         / -st.memory_per_recomputed_bytes)
        if need > sm.recomputable(i, c):
            return None
        recomputed.append(need)
    total, peak = step_time_s(sm, list(units), recomputed)
    if peak > sm.capacity_bytes:
        return None
    total, recomputed = improve_recompute(sm, list(units), recomputed)
    return total * sm.batch_weight, list(units), recomputed


def _simplify(problem: Problem, plan: Plan) -> Plan:
    """Full recompute with no recomputed layer is plain "none" (identical price) when allowed;
    balanced stage lists that equal the default are dropped."""
    allowed = problem.task.constraints.recompute
    if plan.recompute == "full" and plan.recompute_num_layers is not None and not any(plan.recompute_num_layers):
        if "none" in allowed:
            plan = plan.model_copy(update={"recompute": "none", "recompute_num_layers": None})
    if plan.recompute_num_layers is not None and plan.stage_layers is not None:
        everything = list(plan.stage_layers)
        if problem.model.family == "moe":  # "all" means all MoE blocks
            from planner.llm.cost.blocks import layer_mix

            everything = layer_mix(problem.model, everything, plan.virtual_stages)
        if list(plan.recompute_num_layers) == everything:
            plan = plan.model_copy(update={"recompute_num_layers": None})
    if plan.stage_layers is not None and problem.model.num_layers % plan.pp == 0:
        if list(plan.stage_layers) == [problem.model.num_layers // plan.pp] * plan.pp:
            plan = plan.model_copy(update={"stage_layers": None})
    return plan
