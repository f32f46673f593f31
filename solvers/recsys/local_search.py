"""Improving an embedding-sharding plan by single-table moves (for problems too large for the
exact model in the time given): take the rank that sets the busiest phase, try every other option
for each of its tables (largest load first), keep the move that lowers the cost model's step time
most, and repeat until no move helps or time runs out. Every plan is priced by the cost model
(loads are linear in the plan's entries, so a move is a subtraction and an addition)."""

from __future__ import annotations

import time

import numpy as np

from planner.core import kernels
from planner.recsys.cost import step_from_loads
from planner.recsys.loads import RankLoads
from planner.recsys.plan import ShardingPlan, TableSharding
from solvers.recsys.model import Choices


def _add(total: RankLoads, loads: RankLoads, n: float) -> None:
    for name in RankLoads.ARRAYS:
        setattr(total, name, getattr(total, name) + n * getattr(loads, name))
    total.dp_table_grad_bytes += n * loads.dp_table_grad_bytes


def improve(choices: Choices, counts: list[list[int]], dense_index: int, deadline: float) -> tuple[list[list[int]], float]:
    problem, topo = choices.problem, choices.topo
    device = problem.cluster.device
    stub = ShardingPlan(dense=choices.dense[dense_index].dense,
                        tables=[TableSharding(table=choices.groups[0].name, count=choices.groups[0].count,
                                              sharding="data_parallel")])
    counts = [list(row) for row in counts]
    total = RankLoads.zeros(topo.world, topo.num_tiers)
    for g, row in zip(choices.groups, counts, strict=True):
        for index, n in enumerate(row):
            if n:
                _add(total, g.loads(index), n)

    def price(loads: RankLoads) -> float:
        b = step_from_loads(problem, stub, loads)
        return b.step_time_s if b.fits else float("inf")

    current = price(total)
    while time.perf_counter() < deadline:
        lookups = kernels.memory_bound_time_s(total.lookup_fwd_bytes + total.lookup_bwd_bytes, device)
        send = total.traffic(topo)[0].max(axis=1)
        hot = {int(np.argmax(lookups)), int(np.argmax(send))}
        moves = []
        for gi, (g, row) in enumerate(zip(choices.groups, counts, strict=True)):
            for index, n in enumerate(row):
                if not n:
                    continue
                loads = g.loads(index)
                touches = loads.lookup_fwd_bytes + loads.out_payload + loads.memory_bytes
                if any(touches[r] > 0 for r in hot) and touches.sum() < touches.max() * topo.world:
                    moves.append((float(touches[list(hot)].max()), gi, index))
        moves.sort(key=lambda m: -m[0])
        improved = False
        for _, gi, index in moves:
            if time.perf_counter() >= deadline:
                break
            g = choices.groups[gi]
            _add(total, g.loads(index), -1)
            best_value, best_option = current, None
            for other in range(len(g.options)):
                if other == index or time.perf_counter() >= deadline:
                    continue
                _add(total, g.loads(other), 1)
                value = price(total)
                _add(total, g.loads(other), -1)
                if value < best_value * (1 - 1e-9):
                    best_value, best_option = value, other
            if best_option is None:
                _add(total, g.loads(index), 1)
                continue
            _add(total, g.loads(best_option), 1)
            counts[gi][index] -= 1
            counts[gi][best_option] += 1
            current = best_value
            improved = True
            break
        if not improved:
            break
    return counts, current
