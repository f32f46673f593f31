"""The pipeline schedule of a priced plan as a timeline of operations (the Gantt chart's data).

Each stage runs Megatron-Core's order of operations: 1F1B (warm-up forwards, then one forward
and one backward in turn, then cool-down backwards) or, with v model chunks per rank, interleaved
1F1B (micro-batches in groups of p, chunk after chunk; warm-up of (p - i - 1) * 2 + (v - 1) * p
chunk forwards on rank i, everything forward first when m == p). An operation starts when its
rank is free and its input is there: the forward of model chunk g needs chunk g - 1's forward of
the same micro-batch, the backward of chunk g the backward of chunk g + 1 (the last chunk: its own
forward). Durations are the cost model's per-stage times of one micro-batch (StageReport:
forward_s, backward_s; the recompute part of the backward from the stage terms), divided by v
for one chunk; a backward is drawn as its recompute (the re-run forward) followed by the rest.

The cost model prices this pipeline as T = m * max_i t_i + (sum_i t_i - max_i t_i) / v
(planner.llm.cost.pipeline). The timeline ends exactly at T when the stages take equal time, and
in 1F1B when the slowest stage is the last (the head and the loss usually make it so). Otherwise
the two may differ: with the slowest stage earlier the stages behind it catch up in its shadow and
the timeline ends before T (the formula charges their whole fill and drain); with interleaving and
uneven stages a chunk may wait on a slower neighbour and end after it. The report prints both.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from planner.llm.cost.breakdown import Breakdown
from planner.llm.cost.pipeline import pipeline_time_s

EXACT_RTOL = 1e-9
"""Relative difference under which the timeline's end and the priced pipeline time are equal."""


@dataclass(frozen=True)
class Op:
    """One operation on one rank: `kind` forward, recompute or backward, of micro-batch
    `micro_batch` on model chunk `chunk` (0..v-1) of stage `stage`; seconds from the step's start."""

    stage: int
    kind: str
    micro_batch: int
    chunk: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Timeline:
    """A simulated pipeline step: every operation, when the last one ends (`makespan_s`) and
    the pipeline time the cost model priced (`priced_s`)."""

    ops: list[Op]
    num_stages: int
    num_micro_batches: int
    virtual_stages: int
    makespan_s: float
    priced_s: float

    @property
    def exact(self) -> bool:
        return abs(self.makespan_s - self.priced_s) <= EXACT_RTOL * max(self.priced_s, 1e-30)

    @cached_property
    def by_stage(self) -> list[list[Op]]:
        """Each rank's operations in time order."""
        out: list[list[Op]] = [[] for _ in range(self.num_stages)]
        for op in self.ops:
            out[op.stage].append(op)
        return [sorted(ops, key=lambda o: o.start_s) for ops in out]

    def busy_s(self, stage: int) -> float:
        return sum(op.end_s - op.start_s for op in self.by_stage[stage])

    def idle(self, stage: int) -> list[tuple[float, float]]:
        """The gaps (bubbles) of one rank between 0 and the makespan, in order."""
        gaps, at = [], 0.0
        for op in self.by_stage[stage]:
            if op.start_s > at + EXACT_RTOL * self.makespan_s:
                gaps.append((at, op.start_s))
            at = max(at, op.end_s)
        if self.makespan_s > at + EXACT_RTOL * self.makespan_s:
            gaps.append((at, self.makespan_s))
        return gaps


def op_order(p: int, v: int, m: int, rank: int) -> list[tuple[str, int, int]]:
    """Megatron-Core's order of (kind, micro-batch, chunk) on `rank` of p (kind "F" or "B")."""
    total = m * v

    def unit(kind: str, k: int) -> tuple[str, int, int]:
        if v == 1:
            return kind, k, 0
        micro_batch = (k // (p * v)) * p + k % p
        chunk = (k // p) % v
        return kind, micro_batch, chunk if kind == "F" else v - 1 - chunk

    if v == 1:
        warm = min(p - rank - 1, m)
    else:
        warm = total if m == p else min((p - rank - 1) * 2 + (v - 1) * p, total)
    ops = [unit("F", k) for k in range(warm)]
    forwards, backwards = warm, 0
    while forwards < total:
        ops.append(unit("F", forwards))
        ops.append(unit("B", backwards))
        forwards, backwards = forwards + 1, backwards + 1
    ops.extend(unit("B", k) for k in range(backwards, total))
    return ops


def simulate(forward_s: list[float], backward_s: list[float], recompute_s: list[float],
             num_micro_batches: int, virtual_stages: int) -> list[Op]:
    """Every operation of one step (see the module doc); per-stage times are of one micro-batch
    over all the stage's chunks."""
    p, v, m = len(forward_s), virtual_stages, num_micro_batches
    if v > 1 and m % p:
        raise ValueError(f"interleaved 1F1B needs the micro-batches ({m}) to be a multiple of the stages ({p})")
    orders = [op_order(p, v, m, i) for i in range(p)]
    done: dict[tuple[str, int, int], float] = {}
    position, free = [0] * p, [0.0] * p
    ops: list[Op] = []
    progressed = True
    while progressed:
        progressed = False
        for i in range(p):
            while position[i] < len(orders[i]):
                kind, mb, chunk = orders[i][position[i]]
                g = chunk * p + i  # the model chunk's place in the whole pipeline
                if kind == "F":
                    need = ("F", mb, g - 1) if g else None
                else:
                    need = ("F", mb, g) if g == p * v - 1 else ("B", mb, g + 1)
                if need is not None and need not in done:
                    break
                start = max(free[i], done[need] if need else 0.0)
                if kind == "F":
                    end = start + forward_s[i] / v
                    ops.append(Op(i, "forward", mb, chunk, start, end))
                else:
                    middle = start + recompute_s[i] / v
                    end = start + backward_s[i] / v
                    if middle > start:
                        ops.append(Op(i, "recompute", mb, chunk, start, middle))
                    ops.append(Op(i, "backward", mb, chunk, middle, end))
                done[(kind, mb, g)] = end
                free[i] = end
                position[i] += 1
                progressed = True
    if any(position[i] < len(orders[i]) for i in range(p)):  # pragma: no cover (the order has no cycle)
        raise RuntimeError("pipeline schedule deadlocked")
    return ops


def timeline(breakdown: Breakdown, recompute_s: list[float], virtual_stages: int) -> Timeline:
    """The step's pipeline as operations, from a priced plan's stages; `recompute_s` is each
    stage's recompute time of one micro-batch (planner.llm.cost.step.StageTerms.recompute_s)."""
    stages = breakdown.stages
    forward = [s.forward_s for s in stages]
    backward = [s.backward_s for s in stages]
    m = breakdown.num_micro_batches
    ops = simulate(forward, backward, recompute_s, m, virtual_stages)
    priced, _, _ = pipeline_time_s([f + b for f, b in zip(forward, backward, strict=True)], [1] * len(stages),
                                   m, virtual_stages)
    return Timeline(ops=ops, num_stages=len(stages), num_micro_batches=m, virtual_stages=virtual_stages,
                    makespan_s=max(op.end_s for op in ops), priced_s=float(priced))
