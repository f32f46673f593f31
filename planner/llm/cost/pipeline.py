"""Pipeline schedules: step time from per-stage micro-batch times.

With t_i = forward + backward time of one micro-batch on stage i (all its model chunks),
m micro-batches and v model chunks per rank, a 1F1B or interleaved 1F1B step takes

    T = m * max_i t_i + (sum_i t_i - max_i t_i) / v

The first term is the steady state, paced by the slowest stage (not the average); the
second is warm-up plus cool-down, when micro-batches fill and drain the pipeline. For equal
stages it is the familiar (m + (p - 1)/v) * t, i.e. a bubble fraction (p - 1)/(v m)
(Narayanan et al. SC'21, sec. 2.2).
"""

from __future__ import annotations

import numpy as np


def pipeline_time_s(stage_times: list, counts: list, num_micro_batches, virtual_stages):
    """Steady state + bubble (see module doc); `counts` says how many stages each entry is.

    Returns (total_s, bubble_s, slowest_stage_time_s).
    """
    slowest = None
    total_sum = 0.0
    for t, n in zip(stage_times, counts, strict=True):
        n = np.asarray(n, dtype=float)
        candidate = np.where(n > 0, t, 0.0)
        slowest = candidate if slowest is None else np.maximum(slowest, candidate)
        total_sum = total_sum + n * t
    m = np.asarray(num_micro_batches, dtype=float)
    bubble = (total_sum - slowest) / np.asarray(virtual_stages, dtype=float)
    return m * slowest + bubble, bubble, slowest
