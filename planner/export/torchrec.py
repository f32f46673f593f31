"""Embedding-sharding plans as TorchRec sharding plans, and TorchRec's plans as ours.

Two renderings of one plan (torchrec >= 1.8; checked table by table with TorchRec's own types by
planner/frameworks/torchrec_plan.py readback in .venv-torchrec):
    torchrec         JSON: the tables, world and host sizes, and per table TorchRec's
                     ParameterSharding fields (sharding_type, compute_kernel, ranks, shard_sizes,
                     shard_offsets) -- the input of torchrec_plan.py readback
    torchrec-python  Python that builds the same ParameterSharding objects (EnumerableShardingSpec
                     of ShardMetadata) as `module_plan`, {table name: ParameterSharding}, for
                     DistributedModelParallel(plan=ShardingPlan({"<ebc path>": module_plan}))
Shards follow TorchRec's sharding_plan helpers: row-wise ceil(R/W) rows per rank in rank order
(the last ones fewer, or none), table-row-wise ceil(R/L) rows over the host's ranks in order,
column-wise D/k columns in `ranks` order (TorchRec needs the width a multiple of 4), data-parallel
the whole table on every rank with the dense kernel, the others the fused (FBGEMM TBE) kernel.
"""

from __future__ import annotations

import json
import math

from planner import __version__
from planner.export.base import ExportError
from planner.recsys.plan import ShardingPlan, TableSharding
from planner.recsys.problem import RecsysProblem

TABLE_DTYPES = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}


def _expanded(problem: RecsysProblem, plan: ShardingPlan) -> list[tuple[str, object, TableSharding]]:
    """(table name, its group, entry) for every table, entries taking a group's tables in order."""
    groups = {t.name: t for t in problem.model.tables}
    next_index = dict.fromkeys(groups, 0)
    out = []
    for entry in plan.tables:
        group = groups[entry.table]
        names = problem.model.table_names(group)
        start = next_index[entry.table]
        out += [(name, group, entry) for name in names[start:start + entry.count]]
        next_index[entry.table] = start + entry.count
    return out


def parameter_sharding(problem: RecsysProblem, group, entry: TableSharding) -> dict:
    world, local = problem.cluster.num_devices, problem.ranks_per_host
    rows, dim = group.num_rows, group.dim
    kind = entry.sharding
    if kind == "data_parallel":
        ranks = list(range(world))
        return {"sharding_type": kind, "compute_kernel": "dense", "ranks": ranks,
                "shard_sizes": [[rows, dim] for _ in ranks], "shard_offsets": [[0, 0] for _ in ranks]}
    if kind == "table_wise":
        return {"sharding_type": kind, "compute_kernel": "fused", "ranks": list(entry.ranks),
                "shard_sizes": [[rows, dim]], "shard_offsets": [[0, 0]]}
    if kind == "column_wise":
        k = len(entry.ranks)
        width = dim // k
        if width % 4:
            raise ExportError(f"table {group.name!r}: {k} column shards of {width} columns; TorchRec's column-wise "
                              "shards must be a multiple of 4 wide")
        return {"sharding_type": kind, "compute_kernel": "fused", "ranks": list(entry.ranks),
                "shard_sizes": [[rows, width] for _ in range(k)],
                "shard_offsets": [[0, i * width] for i in range(k)]}
    members = list(range(world)) if kind == "row_wise" else list(range(entry.host * local, (entry.host + 1) * local))
    block = math.ceil(rows / len(members))
    sizes = [[max(0, min(block, rows - i * block)), dim] for i in range(len(members))]
    return {"sharding_type": kind, "compute_kernel": "fused", "ranks": members, "shard_sizes": sizes,
            "shard_offsets": [[min(i * block, rows), 0] for i in range(len(members))]}


MAX_SHARDS = 2**20
"""Most shards an export writes (1,048,576: e.g. 1,024 row-wise tables on 1,024 ranks; about 80 MB of
JSON and 1 GB of memory to build it); a larger plan is refused before anything is built (row-wise and
data-parallel tables hold one shard on every rank, so a huge world multiplies every such table)."""


def shards_per_table(problem: RecsysProblem, entry: TableSharding) -> int:
    """Shards one table of `entry` has in the export (one per rank that holds a part of it)."""
    if entry.sharding in ("data_parallel", "row_wise"):
        return problem.cluster.num_devices
    if entry.sharding == "table_row_wise":
        return problem.ranks_per_host
    return len(entry.ranks or ())


def check_shard_count(problem: RecsysProblem, plan: ShardingPlan) -> None:
    """Refuses a plan with more than MAX_SHARDS shards, naming the count."""
    total = sum(entry.count * shards_per_table(problem, entry) for entry in plan.tables)
    if total > MAX_SHARDS:
        raise ExportError(f"the plan has {total:,} shards on {problem.cluster.num_devices:,} ranks (row-wise and "
                          f"data-parallel tables hold one on every rank); the export writes at most {MAX_SHARDS:,} "
                          "(use table-wise, column-wise or table-row-wise sharding, or fewer ranks)")


def table_specs(problem: RecsysProblem) -> list[dict]:
    model = problem.model
    return [{"name": name, "num_rows": t.num_rows, "dim": t.dim, "pooling_factor": t.pooling_factor,
             "weighted": t.weighted, "dtype": TABLE_DTYPES[model.table_dtype(t)]}
            for t in model.tables for name in model.table_names(t)]


def torchrec_document(problem: RecsysProblem, plan: ShardingPlan) -> dict:
    odd = next((i for i, t in enumerate(problem.model.tables) if t.dim % 4), None)
    if odd is not None:
        t = problem.model.tables[odd]
        raise ExportError(f"model {problem.model.name!r}: tables[{odd}].dim: table {t.name!r} has dim {t.dim}: TorchRec's "
                          f"fused FBGEMM kernels need table dims that are multiples of 4 (pad it to "
                          f"{t.dim + 4 - t.dim % 4} in the model)")
    check_shard_count(problem, plan)
    return {
        "format": "planner torchrec sharding plan", "planner_version": __version__,
        "world_size": problem.cluster.num_devices, "local_world_size": problem.ranks_per_host,
        "tables": table_specs(problem),
        "plan": {name: parameter_sharding(problem, group, entry) for name, group, entry in _expanded(problem, plan)},
    }


def torchrec_json(problem: RecsysProblem, plan: ShardingPlan) -> str:
    return json.dumps(torchrec_document(problem, plan), indent=1) + "\n"


def torchrec_python(problem: RecsysProblem, plan: ShardingPlan) -> str:
    doc = torchrec_document(problem, plan)
    rows = [f"    {name!r}: ({p['sharding_type']!r}, {p['compute_kernel']!r}, {p['ranks']}, {p['shard_sizes']}, "
            f"{p['shard_offsets']})," for name, p in doc["plan"].items()]
    # User strings (the model and table names) appear only as repr() literals or after "#" on one
    # line (a repr has no line break): a name holding quotes or triple quotes stays text.
    return "\n".join([
        (f"# planner {__version__} export for TorchRec: the sharding plan of model {problem.model.name!r} on "
         f"{problem.cluster.num_devices} ranks ({problem.ranks_per_host} per host)"),
        '"""TorchRec sharding plan written by planner (the model is named in the comment above).',
        "",
        "module_plan maps each table to its ParameterSharding; pass it as",
        'DistributedModelParallel(module, plan=ShardingPlan({"<path of the EmbeddingBagCollection>": module_plan})).',
        '"""',
        "",
        "from torchrec.distributed.types import EnumerableShardingSpec, ParameterSharding, ShardMetadata",
        "",
        f"WORLD_SIZE = {doc['world_size']}",
        f"LOCAL_WORLD_SIZE = {doc['local_world_size']}",
        'DEVICE = "cuda"',
        "",
        "# table: (sharding type, compute kernel, ranks, shard sizes, shard offsets)",
        "SHARDS = {",
        *rows,
        "}",
        "",
        "",
        "def _parameter_sharding(kind, kernel, ranks, sizes, offsets):",
        '    if kind == "data_parallel":',
        "        return ParameterSharding(sharding_type=kind, compute_kernel=kernel, ranks=list(ranks))",
        "    spec = EnumerableShardingSpec([",
        '        ShardMetadata(shard_offsets=list(o), shard_sizes=list(s), placement=f"rank:{r}/{DEVICE}:{r % LOCAL_WORLD_SIZE}")',
        "        for r, s, o in zip(ranks, sizes, offsets)",
        "    ])",
        "    return ParameterSharding(sharding_type=kind, compute_kernel=kernel, ranks=list(ranks), sharding_spec=spec)",
        "",
        "",
        "module_plan = {name: _parameter_sharding(*shards) for name, shards in SHARDS.items()}",
        "",
    ])


def plan_from_torchrec(problem: RecsysProblem, torchrec_plan: dict) -> ShardingPlan:
    """TorchRec's plan ({table: {sharding_type, ranks, ...}}) as ours (dense DDP, TorchRec's default);
    a one-shard column-wise table is table-wise."""
    from planner.recsys.rules import _merge

    local = problem.ranks_per_host
    entries = []
    for group in problem.model.tables:
        for name in problem.model.table_names(group):
            item = torchrec_plan.get(name)
            if item is None:
                raise ExportError(f"TorchRec's plan has no table {name!r}")
            kind, ranks = item["sharding_type"], [int(r) for r in item.get("ranks") or []]
            if kind == "column_wise" and len(set(ranks)) == 1:
                kind, ranks = "table_wise", ranks[:1]
            if kind == "column_wise" and len(set(ranks)) != len(ranks):
                raise ExportError(f"table {name!r}: TorchRec put two column shards on one rank ({ranks}); "
                                  "the plan format holds one per rank")
            if kind == "table_row_wise":
                entries.append(TableSharding(table=group.name, sharding=kind, host=ranks[0] // local))
            elif kind in ("table_wise", "column_wise"):
                entries.append(TableSharding(table=group.name, sharding=kind, ranks=ranks))
            elif kind in ("row_wise", "data_parallel"):
                entries.append(TableSharding(table=group.name, sharding=kind))
            else:
                raise ExportError(f"table {name!r}: TorchRec sharding type {kind!r} has no equivalent here")
    return ShardingPlan(tables=_merge(entries, problem))
