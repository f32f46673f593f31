"""Rule-based embedding-sharding plans (what tools and people do without a solver). They are
baselines for `planner compare`, hints for the exact search, and the plan `planner validate`
assumes where a published run does not state its sharding.

greedy_plan    TorchRec's default planner in spirit (../shared/reference/recsys.md sec. B.6): a
               table goes table-wise when it fits on one rank, else table-row-wise when it fits
               on a host, else row-wise; table-wise tables are placed largest first (by lookup
               time plus output all-to-all time, as TorchRec's perf score) on the least-loaded
               rank that still has memory (LPT list scheduling); dense DDP.
round_robin_plan  MAD-Max's `mp` embeddings: every table table-wise, dealt round-robin over all
               ranks in declaration order; dense FSDP (its dlrm_train task).
row_wise_plan  every table row-wise; dense DDP.
"""

from __future__ import annotations

import heapq

import numpy as np

from planner.core import kernels
from planner.recsys.cost import dense_cost
from planner.recsys.loads import Topology
from planner.recsys.options import Option, option_loads
from planner.recsys.plan import DenseParallel, ShardingPlan, TableSharding
from planner.recsys.problem import RecsysProblem


def _free_bytes_per_rank(problem: RecsysProblem, dense: DenseParallel) -> float:
    plan = ShardingPlan(dense=dense, tables=[TableSharding(table=problem.model.tables[0].name,
                                                           count=problem.model.tables[0].count,
                                                           sharding="data_parallel")])
    d = dense_cost(problem, plan)
    task = problem.task
    capacity = problem.cluster.device.hbm_bytes * (1 - task.memory_headroom)
    return capacity - task.framework.framework_overhead_bytes - d.params_bytes - d.grads_bytes \
        - d.optimizer_bytes - d.activation_bytes


def greedy_plan(problem: RecsysProblem) -> ShardingPlan:
    topo = Topology(problem)
    world, hosts = topo.world, topo.hosts
    device = problem.cluster.device
    outer = problem.cluster.tiers[-1]
    dense = DenseParallel(strategy="ddp")
    free = np.full(world, _free_bytes_per_rank(problem, dense))
    perf = np.zeros(world)
    host_perf = np.zeros(hosts)
    entries: list[TableSharding] = []
    tw_items = []  # (score, memory, table name, count)
    for table in problem.model.tables:
        tw = option_loads(problem, table, Option("table_wise", (0,)), topo)
        memory = float(tw.memory_bytes[0])
        lookup = float(kernels.memory_bound_time_s(tw.lookup_fwd_bytes[0] + tw.lookup_bwd_bytes[0], device))
        a2a = float(tw.out_payload[0]) * (world - 1) / (outer.bandwidth_bytes_per_s * outer.efficiency)
        if memory <= free.max() or hosts == 1 and world == 1:
            tw_items.append((lookup + a2a, memory, table.name, table.count))
            continue
        if hosts > 1 and problem.ranks_per_host > 1:
            twrw = option_loads(problem, table, Option("table_row_wise", host=0), topo)
            need = float(twrw.memory_bytes.max())
            for _ in range(table.count):
                order = np.argsort(host_perf, kind="stable")
                host = next((int(h) for h in order
                             if free[h * topo.per_host:(h + 1) * topo.per_host].min() >= need), None)
                if host is None:
                    break
                free[host * topo.per_host:(host + 1) * topo.per_host] -= need
                host_perf[host] += float(kernels.memory_bound_time_s(twrw.lookup_fwd_bytes.max()
                                                                     + twrw.lookup_bwd_bytes.max(), device))
                entries.append(TableSharding(table=table.name, sharding="table_row_wise", host=host))
            else:
                continue
            placed = sum(e.count for e in entries if e.table == table.name)
            rest = table.count - placed
        else:
            rest = table.count
        rw = option_loads(problem, table, Option("row_wise"), topo)
        free -= rest * rw.memory_bytes  # row-wise shards load every rank
        entries.append(TableSharding(table=table.name, count=rest, sharding="row_wise"))
    tw_items.sort(key=lambda item: (-item[0], -item[1], item[2]))
    heap = [(0.0, r) for r in range(world)]
    for score, memory, name, count in tw_items:
        placed: dict[int, int] = {}
        for _ in range(count):
            skipped = []
            rank = None
            while heap:
                load, r = heapq.heappop(heap)
                if free[r] >= memory:
                    rank = r
                    break
                skipped.append((load, r))
            for item in skipped:
                heapq.heappush(heap, item)
            if rank is None:
                break
            free[rank] -= memory
            perf[rank] += score
            heapq.heappush(heap, (perf[rank], rank))
            placed[rank] = placed.get(rank, 0) + 1
        for rank in sorted(placed):
            entries.append(TableSharding(table=name, count=placed[rank], sharding="table_wise", ranks=[rank]))
        left = count - sum(placed.values())
        if left:
            table = topo.tables[name]
            free -= left * option_loads(problem, table, Option("row_wise"), topo).memory_bytes
            entries.append(TableSharding(table=name, count=left, sharding="row_wise"))
    return ShardingPlan(dense=dense, tables=_merge(entries, problem))


def round_robin_plan(problem: RecsysProblem) -> ShardingPlan:
    world = problem.cluster.num_devices
    entries = []
    position = 0
    for table in problem.model.tables:
        counts: dict[int, int] = {}
        for i in range(table.count):
            rank = (position + i) % world
            counts[rank] = counts.get(rank, 0) + 1
        position = (position + table.count) % world
        entries += [TableSharding(table=table.name, count=c, sharding="table_wise", ranks=[r])
                    for r, c in sorted(counts.items())]
    dense = DenseParallel(strategy="fsdp" if world > 1 else "ddp")
    return ShardingPlan(dense=dense, tables=entries)


def row_wise_plan(problem: RecsysProblem) -> ShardingPlan:
    kind = "row_wise" if problem.cluster.num_devices > 1 else "table_wise"
    return ShardingPlan(tables=[TableSharding(table=t.name, count=t.count, sharding=kind,
                                              ranks=[0] if kind == "table_wise" else None)
                                for t in problem.model.tables])


def _merge(entries: list[TableSharding], problem: RecsysProblem) -> list[TableSharding]:
    """Entries in model table order, equal ones merged, empty ones dropped."""
    order = {t.name: i for i, t in enumerate(problem.model.tables)}
    merged: dict[tuple, int] = {}
    for e in entries:
        if e.count <= 0:
            continue
        key = (e.table, e.sharding, tuple(e.ranks or ()), e.host)
        merged[key] = merged.get(key, 0) + e.count
    out = [TableSharding(table=k[0], count=c, sharding=k[1], ranks=list(k[2]) or None, host=k[3])
           for k, c in merged.items()]
    return sorted(out, key=lambda e: (order[e.table], e.sharding, e.ranks or [], e.host or 0))
