"""Embedding-sharding plans: for each table a sharding type and the ranks that hold its shards,
and for the dense part DDP, FSDP or TP x DP.

Sharding types (TorchRec's; ../shared/reference/recsys.md sec. B.2), W ranks, L per host (the
innermost network tier's domain):
    data_parallel   every rank holds the whole table and looks up its own samples' ids
    table_wise      one rank holds the table and looks up the ids of the whole global batch
    column_wise     k ranks each hold D/k columns (k = len(ranks); D/k a multiple of 4 when k > 1) and
                    look up every id
    row_wise        all W ranks hold ceil(R/W) rows each and look up the ids that fall in them
    table_row_wise  the L ranks of one host hold ceil(R/L) rows each

Entries cover a group's tables in order: `{table: t, count: 32, sharding: table_wise, ranks: [5]}`
puts the next 32 tables of group `t` on rank 5. Every table is covered exactly once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from planner.core.provenance import Provenance
from planner.core.schema import Name, Spec

if TYPE_CHECKING:
    from planner.recsys.problem import RecsysProblem

ShardingType = Literal["data_parallel", "table_wise", "column_wise", "row_wise", "table_row_wise"]
SHARDING_TYPES: tuple[ShardingType, ...] = ("data_parallel", "table_wise", "column_wise", "row_wise",
                                            "table_row_wise")


COLUMN_SHARD_WIDTH_MULTIPLE = 4
"""A column shard's width must be a multiple of 4 (TorchRec's fused FBGEMM kernels need it; the
search's column-wise options obey the same rule, planner.recsys.options)."""


class TableSharding(Spec):
    """How `count` tables of one group are sharded."""

    table: Name = Field(description="A table (group) name of the model.")
    count: int = Field(default=1, gt=0, le=2**20, description="Tables of the group this entry covers.")
    sharding: ShardingType
    ranks: list[int] | None = Field(
        default=None, max_length=2**16,
        description="table_wise: [rank]; column_wise: one rank per column shard; others: none.",
    )
    host: int | None = Field(default=None, ge=0, le=2**24, description="table_row_wise: the host index.")

    @model_validator(mode="after")
    def _check(self) -> TableSharding:
        needs_ranks = self.sharding in ("table_wise", "column_wise")
        if needs_ranks and not self.ranks:
            raise ValueError(f"{self.sharding} needs ranks (table_wise: one rank; column_wise: one per shard)")
        if not needs_ranks and self.ranks is not None:
            raise ValueError(f"{self.sharding} takes no ranks")
        if self.sharding == "table_wise" and self.ranks is not None and len(self.ranks) != 1:
            raise ValueError(f"table_wise takes exactly one rank, got {len(self.ranks)}")
        if self.ranks is not None and any(r < 0 for r in self.ranks):
            raise ValueError("ranks must be >= 0")
        if self.sharding == "table_row_wise" and self.host is None:
            raise ValueError("table_row_wise needs host (the index of the host whose ranks hold the rows)")
        if self.sharding != "table_row_wise" and self.host is not None:
            raise ValueError(f"{self.sharding} takes no host")
        return self


class DenseParallel(Spec):
    """The MLPs' and interaction's parallelism (MAD-Max's three)."""

    strategy: Literal["ddp", "fsdp", "tp"] = Field(
        default="ddp", description="ddp: replicated, gradients all-reduced; fsdp: parameters sharded over "
        "all ranks (ZeRO-3); tp: tensor-parallel groups of `tp` ranks inside a host, DDP across them.",
    )
    tp: int = Field(default=1, gt=0, le=2**16, description="TP degree (strategy tp).")

    @model_validator(mode="after")
    def _check(self) -> DenseParallel:
        if self.strategy != "tp" and self.tp != 1:
            raise ValueError(f"tp: only strategy tp takes a TP degree (strategy is {self.strategy})")
        return self


class ShardingPlan(Spec):
    """One embedding-sharding plan of a DLRM training step."""

    family: Literal["dlrm"] = "dlrm"
    dense: DenseParallel = DenseParallel()
    tables: list[TableSharding] = Field(min_length=1, max_length=2**21)
    provenance: Provenance = Provenance()

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for entry in self.tables:
            counts[entry.sharding] = counts.get(entry.sharding, 0) + entry.count
        short = {"data_parallel": "DP", "table_wise": "TW", "column_wise": "CW", "row_wise": "RW",
                 "table_row_wise": "TWRW"}
        parts = [f"{short[k]} {counts[k]}" for k in SHARDING_TYPES if k in counts]
        dense = self.dense.strategy.upper() + (f"{self.dense.tp}" if self.dense.strategy == "tp" else "")
        return f"tables: {', '.join(parts)}; dense {dense}"


def check_plan(plan: ShardingPlan, problem: RecsysProblem) -> list[str]:
    """Every way `plan` is inconsistent with `problem` (empty when it can be priced)."""
    errors: list[str] = []
    model, cluster = problem.model, problem.cluster
    world = cluster.num_devices
    hosts = problem.num_hosts
    groups = {t.name: t for t in model.tables}
    covered = dict.fromkeys(groups, 0)
    for index, entry in enumerate(plan.tables):
        where = f"tables[{index}]"
        group = groups.get(entry.table)
        if group is None:
            names = ", ".join(list(groups)[:8]) + (", ..." if len(groups) > 8 else "")
            errors.append(f"{where}.table: the model has no table {entry.table!r} (tables: {names})")
            continue
        covered[entry.table] += entry.count
        bad = [r for r in entry.ranks or [] if r >= world]
        if bad:
            errors.append(f"{where}.ranks: rank {bad[0]} does not exist (ranks are 0..{world - 1})")
        if entry.sharding == "column_wise" and entry.ranks:
            shards = len(entry.ranks)
            if group.dim % shards:
                errors.append(f"{where}.ranks: {shards} column shards do not divide {entry.table!r}'s dim "
                              f"{group.dim} (use a divisor of {group.dim})")
            elif shards > 1 and (group.dim // shards) % COLUMN_SHARD_WIDTH_MULTIPLE:
                fits = [k for k in range(2, shards) if group.dim % k == 0
                        and (group.dim // k) % COLUMN_SHARD_WIDTH_MULTIPLE == 0]
                errors.append(f"{where}.ranks: {shards} column shards of {entry.table!r} (dim {group.dim}) are "
                              f"{group.dim // shards} columns wide; TorchRec's fused kernels need a multiple of "
                              f"{COLUMN_SHARD_WIDTH_MULTIPLE} (use "
                              + (f"{fits[-1]} shards)" if fits else "table-wise or row-wise sharding)"))
            if len(set(entry.ranks)) != shards:
                errors.append(f"{where}.ranks: a rank holds two column shards of one table; give distinct ranks")
        if entry.sharding == "table_row_wise" and entry.host is not None and entry.host >= hosts:
            errors.append(f"{where}.host: host {entry.host} does not exist ({hosts} hosts of "
                          f"{problem.ranks_per_host} ranks: 0..{hosts - 1})")
    for name, count in covered.items():
        expected = groups[name].count
        if count != expected:
            errors.append(f"tables: group {name!r} has {expected} table(s) but the entries cover {count}")
    dense = plan.dense
    if dense.strategy == "tp":
        if problem.ranks_per_host % dense.tp:
            errors.append(f"dense.tp: TP {dense.tp} does not divide the {problem.ranks_per_host} ranks of a host "
                          "(TP groups stay inside a host)")
        elif problem.task.global_batch_size % (world // dense.tp):
            errors.append(f"dense.tp: the global batch {problem.task.global_batch_size} does not split over "
                          f"{world // dense.tp} data-parallel groups")
    return errors
