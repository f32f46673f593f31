"""The search space of embedding sharding: the options one table may take, and the dense
strategies, with each option's loads priced once by planner.recsys.loads.

Options of a table (W ranks, L per host, H hosts):
    data_parallel                    one option
    table_wise on rank r             W options
    column_wise in k shards          k > 1 dividing D and L, shard width a multiple of 4 (FBGEMM's
                                     fused kernels need it), on an aligned block of k consecutive
                                     ranks of one host: W / k options per k
    row_wise                         one option (W > 1)
    table_row_wise on host h         H options (L > 1 and H > 1; with one host it is row_wise)
Dense strategies: DDP, FSDP, and TP of every degree tp > 1 dividing L (and the batch split).
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.recsys.loads import RankLoads, Topology, entry_loads
from planner.recsys.model import EmbeddingTable
from planner.recsys.plan import COLUMN_SHARD_WIDTH_MULTIPLE, SHARDING_TYPES, DenseParallel, ShardingType, TableSharding
from planner.recsys.problem import RecsysProblem

MIN_SHARD_WIDTH_MULTIPLE = COLUMN_SHARD_WIDTH_MULTIPLE
"""Column shards must be a multiple of 4 wide (TorchRec's fused FBGEMM kernels need it; the plan check's rule)."""


@dataclass(frozen=True)
class Option:
    """One way to shard one table."""

    sharding: ShardingType
    ranks: tuple[int, ...] | None = None
    host: int | None = None

    def entry(self, table: str, count: int = 1) -> TableSharding:
        return TableSharding(table=table, count=count, sharding=self.sharding,
                             ranks=list(self.ranks) if self.ranks is not None else None, host=self.host)

    @classmethod
    def of(cls, entry: TableSharding) -> Option:
        return cls(entry.sharding, tuple(entry.ranks) if entry.ranks is not None else None, entry.host)

    def label(self) -> str:
        if self.sharding == "table_wise":
            return f"TW@{self.ranks[0]}"
        if self.sharding == "column_wise":
            return f"CW{len(self.ranks)}@{self.ranks[0]}"
        if self.sharding == "table_row_wise":
            return f"TWRW@host{self.host}"
        return {"row_wise": "RW", "data_parallel": "DP"}[self.sharding]


@dataclass(frozen=True)
class RecsysSpace:
    """Which options the search declares."""

    sharding_types: tuple[ShardingType, ...] = SHARDING_TYPES
    max_column_shards: int | None = None
    """Largest column-shard count (default: the host size)."""


def table_options(problem: RecsysProblem, table: EmbeddingTable, space: RecsysSpace = RecsysSpace()) -> list[Option]:
    world, per_host, hosts = problem.cluster.num_devices, problem.ranks_per_host, problem.num_hosts
    allowed = set(space.sharding_types)
    options: list[Option] = []
    if "data_parallel" in allowed:
        options.append(Option("data_parallel"))
    if "table_wise" in allowed:
        options += [Option("table_wise", (r,)) for r in range(world)]
    if "column_wise" in allowed:
        largest = min(space.max_column_shards or per_host, per_host)
        for k in range(2, largest + 1):
            if table.dim % k or per_host % k or (table.dim // k) % MIN_SHARD_WIDTH_MULTIPLE:
                continue
            options += [Option("column_wise", tuple(range(start, start + k))) for start in range(0, world, k)]
    if "row_wise" in allowed and world > 1:
        options.append(Option("row_wise"))
    if "table_row_wise" in allowed and per_host > 1 and hosts > 1:
        options += [Option("table_row_wise", host=h) for h in range(hosts)]
    return options


def dense_strategies(problem: RecsysProblem) -> list[DenseParallel]:
    world, per_host = problem.cluster.num_devices, problem.ranks_per_host
    strategies = [DenseParallel(strategy="ddp")]
    if world > 1:
        strategies.append(DenseParallel(strategy="fsdp"))
    for tp in range(2, per_host + 1):
        if per_host % tp == 0 and problem.task.global_batch_size % (world // tp) == 0:
            strategies.append(DenseParallel(strategy="tp", tp=tp))
    return strategies


def option_loads(problem: RecsysProblem, table: EmbeddingTable, option: Option,
                 topo: Topology | None = None) -> RankLoads:
    """The loads of one table of `table`'s group taking `option` (a plan's loads are sums of these)."""
    return entry_loads(problem, option.entry(table.name), topo)
