"""Valid lower bounds used to prune configurations before the exact search.

Both bounds are relaxations of the exact per-configuration problem (the stage partition and
per-stage recompute counts), so a configuration whose bound exceeds a known plan's step time,
or the device memory, cannot hold the optimum.

Step time (`time_lower_bound`), for a configuration with p stages, v virtual stages and m
micro-batches: with t_i the stage times,
    T = m max_i t_i + (sum_i t_i - max_i t_i)/v + (DP exposure >= 0) + max_i O_i + sync
      >= (m - 1/v) * S/p + S/v + (sum_i O_i)/p + sync,        S = sum_i t_i
because max_i t_i >= S/p and m >= 1/v. Every part of t_i is affine in the stage's layer count
except the exposed pipeline send max(hop - a*l, 0), which is convex; recompute only adds time.
So S >= the sum over stages of t_i at the uniform split l = L/p with no recompute (Jensen), and
sum_i O_i (affine) equals its value at the uniform split.

Memory (`memory_lower_bound`): stage i's peak is affine in its layers, M_i = a_i + d_i c_i
(c_i chunks of v layers), with d_i taken at full recompute when that mode is allowed and the
recompute transient dropped. The smallest max_i M_i over real c_i >= 1 with sum c_i = C is
    max( max_i (a_i + d_i),  (C + sum_i a_i/d_i) / sum_i (1/d_i) )
(water-filling); no integer partition does better.
"""

from __future__ import annotations

import numpy as np

from planner.candidates import CandidateSet, _strides
from planner.cost.layout import RECOMPUTE_CODES, PlanVars
from planner.cost.step import StageSpec, assemble
from planner.problem import Problem
from planner.stage_tables import StageModel


def time_lower_bound(problem: Problem, c: CandidateSet) -> np.ndarray:
    """Per candidate, a valid lower bound on the step time of any partition (seconds)."""
    model, task = problem.model, problem.task
    v = PlanVars(
        tp=c.tp, cp=c.cp, pp=c.pp, dp=c.dp, virtual_stages=c.virtual_stages,
        micro_batch_size=c.micro_batch_size, sp=c.sp, tp_comm_overlap=c.tp_comm_overlap,
        zero_stage=c.zero_stage, shard_size=np.where(c.zero_stage > 0, c.shard_size, 1),
        recompute=c.recompute, strides=_strides(c),
    )
    pp = c.pp.astype(float)
    per_stage = model.num_layers / pp
    zero = np.zeros(len(c))
    single = pp == 1
    specs = [
        StageSpec(index=0, layers=per_stage, recomputed=zero, is_first=True, is_last=single, count=1),
        StageSpec(index=1, layers=per_stage, recomputed=zero, is_first=False, is_last=False,
                  count=np.maximum(pp - 2, 0)),
        StageSpec(index=pp - 1, layers=per_stage, recomputed=zero, is_first=False, is_last=True,
                  count=np.where(single, 0, 1)),
    ]
    m = (task.num_sequences // (c.dp * c.micro_batch_size)).astype(float)
    a = assemble(problem, v, specs, m)
    total = sum(np.asarray(s.count, dtype=float) * x.total_s for s, x in zip(specs, a.terms, strict=True))
    from planner.cost.step import data_parallel_raw

    optimizer_sum = sum(
        np.asarray(s.count, dtype=float) * np.asarray(data_parallel_raw(problem, v, s).optimizer_s, dtype=float)
        for s in specs
    )
    vs = c.virtual_stages.astype(float)
    bound = total * ((m - 1.0 / vs) / pp + 1.0 / vs) + optimizer_sum / pp + np.asarray(a.embedding_sync_s)
    return np.asarray(bound, dtype=float)


def memory_lower_bound(sm: StageModel) -> float:
    """A valid lower bound on the peak memory per GPU of any partition (bytes)."""
    a, d = [], []
    for st in sm.stages:
        slope = st.memory_bytes[1] - st.memory_bytes[0]
        if sm.recompute_full:
            slope += min(st.memory_per_recomputed_bytes, 0.0) * sm.virtual_stages
        a.append(st.memory_bytes[0])
        d.append(max(slope, 1e-9))
    a_arr, d_arr = np.array(a), np.array(d)
    chunks = sm.chunks
    water = (chunks + np.sum(a_arr / d_arr)) / np.sum(1.0 / d_arr)
    return float(max(np.max(a_arr + d_arr), water))


_ = RECOMPUTE_CODES
