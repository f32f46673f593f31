"""The priced choices an embedding-sharding search picks from: for every table group its options
with their single-table loads (planner.recsys.options), and every dense strategy's constants
(planner.recsys.cost.dense_cost). Solvers only add these up; nothing is re-priced here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from planner.core import kernels
from planner.core.collectives import collective_time_s, members_per_tier
from planner.recsys.cost import dense_cost
from planner.recsys.loads import RankLoads, Topology
from planner.recsys.options import Option, RecsysSpace, dense_strategies, option_loads, table_options
from planner.recsys.plan import DenseParallel, ShardingPlan, TableSharding
from planner.recsys.problem import RecsysProblem


@dataclass
class DenseChoice:
    """One dense strategy's constants (seconds, bytes)."""

    dense: DenseParallel
    bottom_fwd_s: float
    bottom_bwd_s: float
    fixed_s: float
    """Dense forward and backward, TP all-reduces, exposed FSDP gathers and the optimizer."""
    sync_s: float
    """The dense gradient all-reduce (0 for FSDP)."""
    memory_bytes: float
    """Dense parameters, gradients, optimizer state, activations and the framework's overhead."""


OWNER_ARRAYS = ("lookup_fwd_bytes", "lookup_bwd_bytes", "memory_bytes", "shards", "out_payload", "ids_payload")
"""The only arrays a table- or column-wise option loads, and only at its owner ranks."""


@dataclass
class GroupChoices:
    name: str
    count: int
    options: list[Option]
    priced: list
    """Per option: its RankLoads (one table); for a table- or column-wise option the pair
    (owner ranks, {array: values at those ranks}) -- its loads are zero elsewhere; or None for a
    table-row-wise option, priced when asked for (one per host: on many hosts, full per-rank
    arrays for each would not fit in memory)."""
    world: int = 0
    num_tiers: int = 0
    problem: RecsysProblem | None = None
    topo: Topology | None = None

    def loads(self, index: int) -> RankLoads:
        """The full loads of one table of the group under option `index`."""
        item = self.priced[index]
        if isinstance(item, RankLoads):
            return item
        if item is None:
            return option_loads(self.problem, self.topo.tables[self.name], self.options[index], self.topo)
        ranks, values = item
        loads = RankLoads.zeros(self.world, self.num_tiers)
        for name, vals in values.items():
            getattr(loads, name)[ranks] = vals
        return loads


@dataclass
class Choices:
    problem: RecsysProblem
    topo: Topology
    groups: list[GroupChoices]
    dense: list[DenseChoice]
    capacity_bytes: float
    dp_sync_s_per_byte: float
    dp_sync_latency_s: float
    """The data-parallel tables' gradient all-reduce: latency + bytes * per-byte time (linear in
    bytes; read off the collective model at two sizes)."""

    @property
    def num_options(self) -> int:
        return sum(len(g.options) for g in self.groups)


class OutOfTime(Exception):
    """The deadline passed while the choices were being priced."""


EAGER_TABLE_ROW_WISE_ELEMENTS = 2**24
"""Table-row-wise options are priced up front while their per-rank arrays (hosts x ranks x tiers
per group) stay below this many numbers; above it they are priced when asked for."""


def build_choices(problem: RecsysProblem, space: RecsysSpace = RecsysSpace(), deadline: float | None = None) -> Choices:
    """Every group's options, priced; raises OutOfTime when `deadline` (perf_counter seconds)
    passes first."""
    topo = Topology(problem)
    eager = topo.hosts * topo.world * (1 + topo.num_tiers) <= EAGER_TABLE_ROW_WISE_ELEMENTS
    groups = []
    for table in problem.model.tables:
        if deadline is not None and time.perf_counter() > deadline:
            raise OutOfTime(f"pricing the options of {len(groups):,} of {len(problem.model.tables):,} table groups")
        options = table_options(problem, table, space)
        groups.append(GroupChoices(table.name, table.count, options, _priced(problem, table, options, topo, eager),
                                   topo.world, topo.num_tiers, problem, topo))
    task = problem.task
    capacity = problem.cluster.device.hbm_bytes * (1 - task.memory_headroom)
    dense = []
    for strategy in dense_strategies(problem):
        plan = ShardingPlan(dense=strategy, tables=[TableSharding(table=problem.model.tables[0].name,
                                                                  count=problem.model.tables[0].count,
                                                                  sharding="data_parallel")])
        d = dense_cost(problem, plan)
        dense_fwd = d.bottom_fwd_s + d.top_fwd_s
        dense_bwd = d.bottom_bwd_s + d.top_bwd_s
        fsdp = max(d.fsdp_fwd_comm_s - dense_fwd, 0.0) + max(d.fsdp_bwd_comm_s - dense_bwd, 0.0)
        dense.append(DenseChoice(
            dense=strategy, bottom_fwd_s=d.bottom_fwd_s, bottom_bwd_s=d.bottom_bwd_s,
            fixed_s=dense_fwd + dense_bwd + d.tp_comm_s + fsdp + d.optimizer_s, sync_s=d.sync_s,
            memory_bytes=d.params_bytes + d.grads_bytes + d.optimizer_bytes + d.activation_bytes
            + task.framework.framework_overhead_bytes))
    members = members_per_tier(problem.cluster, [topo.world], [1])
    one = float(collective_time_s("all_reduce", 1.0, members, problem.cluster))
    two = float(collective_time_s("all_reduce", 2.0, members, problem.cluster))
    return Choices(problem, topo, groups, dense, capacity, two - one, one - (two - one))


def _priced(problem: RecsysProblem, table, options: list[Option], topo: Topology, eager: bool = True) -> list:
    """Each option's loads (see GroupChoices.priced). A table- or column-wise option loads only its
    owner ranks, alike for every placement of the same shard count, so it is priced once per shard
    count and its owner values reused (tests/test_recsys_exactness.py checks this against pricing
    every option)."""
    base: dict[tuple, dict] = {}
    out = []
    for option in options:
        if option.sharding == "table_row_wise" and not eager:
            out.append(None)
            continue
        if option.sharding not in ("table_wise", "column_wise"):
            out.append(option_loads(problem, table, option, topo))
            continue
        key = (option.sharding, len(option.ranks))
        if key not in base:
            loads = option_loads(problem, table, option, topo)
            owners = np.asarray(option.ranks)
            base[key] = {name: getattr(loads, name)[owners].copy() for name in OWNER_ARRAYS}
        out.append((np.asarray(option.ranks), base[key]))
    return out


def lookup_seconds(choices: Choices, loads: RankLoads) -> tuple[np.ndarray, np.ndarray]:
    device = choices.problem.cluster.device
    return (kernels.memory_bound_time_s(loads.lookup_fwd_bytes, device),
            kernels.memory_bound_time_s(loads.lookup_bwd_bytes, device))


def plan_of(choices: Choices, counts: list[list[int]], dense_index: int, **provenance) -> ShardingPlan:
    """The plan that takes counts[g][o] tables of group g with option o."""
    entries = [option.entry(group.name, n) for group, row in zip(choices.groups, counts, strict=True)
               for option, n in zip(group.options, row, strict=True) if n > 0]
    plan = ShardingPlan(dense=choices.dense[dense_index].dense, tables=entries)
    if provenance:
        plan = plan.model_copy(update={"provenance": plan.provenance.model_copy(update=provenance)})
    return plan


def counts_of(choices: Choices, plan: ShardingPlan) -> tuple[list[list[int]], int] | None:
    """The counts and dense index of a plan, or None where it uses an option outside the space."""
    counts = [[0] * len(g.options) for g in choices.groups]
    index = {g.name: i for i, g in enumerate(choices.groups)}
    for entry in plan.tables:
        g = index[entry.table]
        try:
            o = choices.groups[g].options.index(Option.of(entry))
        except ValueError:
            return None
        counts[g][o] += entry.count
    dense = [d.dense for d in choices.dense]
    if plan.dense not in dense:
        return None
    return counts, dense.index(plan.dense)
