"""TorchRec's own embedding-table sharding planner, and a read-back of a plan file with TorchRec's types.

Usage (with the interpreter of .venv-torchrec; see .ci/run):
    python torchrec_plan.py plan IN.json       one JSON object on stdout
    python torchrec_plan.py readback IN.json   one JSON object on stdout
    python torchrec_plan.py estimate IN.json   one JSON object on stdout

Standard library, torch and TorchRec only; this file does not import planner. Everything TorchRec
logs goes to stderr, so stdout carries the one JSON object alone. Unless PYTHONHASHSEED is set, the
script runs itself again with PYTHONHASHSEED=0: TorchRec breaks ties between equally rated sharding
options (a one-shard column_wise and a table_wise, say) in string-hash order, so without a fixed
seed the same input can give a different (equally rated) plan in each process.

`plan` reads {"tables": [{"name", "num_rows", "dim", "pooling_factor", "weighted", "dtype":
"fp32" | "fp16" | "bf16"}, ...], "world_size", "local_world_size", "batch_size_per_rank",
"hbm_bytes_per_rank", "ddr_bytes_per_rank", "hbm_bandwidth_bytes_per_s",
"intra_host_bandwidth_bytes_per_s", "inter_host_bandwidth_bytes_per_s",
"storage_reservation_fraction", "sharding_types", "compute_kernels", "optimizer":
"rowwise_adagrad" | "adam" | "sgd" | "none", "timeout_s"} (optional: "ddr_bandwidth_bytes_per_s",
"hbm_to_ddr_bandwidth_bytes_per_s", "compute_device" (default "cuda"), "storage_reservation":
"heuristical" (TorchRec's default) | "fixed_percentage"; per table "sharding_types",
"compute_kernels", "min_partition"). It builds an EmbeddingBagCollection on the meta device (a
second, weighted one for the weighted tables: TorchRec takes a table's weightedness from its
module, not from its constraint), applies the optimizer in backward as a TorchRec training script
does (the storage estimate reads the optimizer class off the parameter), one ParameterConstraints
per table, a Topology, and runs EmbeddingShardingPlanner.plan(module, sharders) without a process
group (what collective_plan runs on rank 0). It prints
  {"torchrec_version", "planning_s", "plan": {TABLE: {"sharding_type", "compute_kernel", "ranks",
   "shard_sizes", "shard_offsets"}}, "estimate": {"per_rank_perf_ms", "per_rank_hbm_bytes",
   "per_rank_ddr_bytes", "max_rank_perf_ms", "tables": {TABLE: {"fwd_compute_ms", "fwd_comms_ms",
   "bwd_compute_ms", "bwd_comms_ms", "input_dist_comms_ms", "prefetch_compute_ms", "total_ms",
   "hbm_bytes", "ddr_bytes"}}, "per_rank_parts_ms": {"fwd_compute_ms": [per rank], ...},
   "fits", "timed_out", ...}, "notes": [...]}
or {"error": ONE-LINE} with exit status 1 when TorchRec cannot plan.

Units. TorchRec's Topology takes bandwidths in bytes per millisecond (planner/constants.py:
INTRA_NODE_BANDWIDTH = 600 * 1024**3 / 1000 "bytes/ms"), so every *_bytes_per_s input is divided
by 1000. Capacities are bytes (hbm_cap, ddr_cap). The estimates come back in milliseconds per
iteration (Perf) and bytes (Storage). The inter-host bandwidth is per rank (TorchRec assumes one NIC
per GPU; its all-reduce uses inter_host_bw * local_world_size).

"timed_out" says TorchRec's proposers stopped at timeout_s (the plan is then the best found so far;
the timeout is checked between proposals, after the enumeration, so planning_s can pass it). The
estimate is TorchRec's: every shard of the best plan carries a Perf and a Storage. A rank's
perf is the sum of Perf.total over its shards, which is what TorchRec's NoopPerfModel rates a plan
by (the max over ranks); Perf.total leaves out input_dist_comms, reported apart. A table's
figures are sums over its shards. A shard's Storage counts the weights, the optimizer state and
the shard's input and output buffers, so it is more than rows x dim x element size.

`estimate` prices a GIVEN plan with TorchRec's own estimators. It reads what `plan` reads (the
sharding types, kernels and timeout are not used) and a "plan" in the output format above
({TABLE: {"sharding_type", "compute_kernel", "ranks", "shard_sizes", "shard_offsets"}}), or
"plans": {LABEL: plan, ...} to price several in one run. For each plan it runs TorchRec's
EmbeddingEnumerator with one ParameterConstraints per table that allows only the table's sharding
type and kernel (min_partition = the column-shard width for column_wise), so the enumerator makes
the one option TorchRec would make for that choice and EmbeddingPerfEstimator and
EmbeddingStorageEstimator fill in its shards' Perf and Storage, exactly as when TorchRec plans. The
shards are then put on the given ranks, in order (TorchRec's estimates do not depend on the rank:
only its partitioner looks at placement). Shards that differ from the ones TorchRec makes (a
column width it would round up to a multiple of 4, say) replace them and are estimated again by
the same estimators (a note names the tables). It prints {"plan", "estimate", "notes"?,
"estimate_s", "torchrec_version", ...} -- "estimate" as `plan` gives it; "fits" says whether every
rank's shards fit the capacity left after the storage reservation, which TorchRec's partitioner
requires -- or for "plans" {"estimates": {LABEL: {"plan", "estimate", ...} or {"error"}}}; exit
status 1 with {"error"} for one plan TorchRec cannot price. Optional "estimator_overrides":
{"block_usage_penalty": false, "min_dim_for_lookup": false} turns those two terms of TorchRec's
table-wise / column-wise compute estimate off (diagnosis only: their effect on a plan's score).

The score. max_rank_perf_ms is NoopPerfModel.rate of the placed options, the number
EmbeddingShardingPlanner keeps the lowest of among its proposals, so TorchRec's plan and a given
plan priced here compare like for like; TorchRec's plan priced here gives back the estimate `plan`
returned for it.

`readback` reads the same "tables", "world_size" and "local_world_size" and a "plan" in the output
format above, and optionally "python": a Python file that defines `plan` (a ShardingPlan) or
`module_plan` (an EmbeddingModuleShardingPlan). For each table it builds TorchRec's own
ParameterSharding with torchrec.distributed.sharding_plan's helpers and construct_module_sharding_plan
on the meta-device EmbeddingBagCollection:
  table_wise         table_wise(rank=ranks[0])
  row_wise           row_wise()                     ranks 0..world_size-1 in order, ceil(rows/world) rows
                                                    each (the last shards fewer, or none)
  column_wise        column_wise(ranks=ranks)       shard i on ranks[i] (ranks may repeat); dim must divide
                                                    by len(ranks), and the shard width is the smallest
                                                    multiple of 4 >= dim/len(ranks) that divides dim, so
                                                    equal shards whose width is not a multiple of 4
                                                    cannot be expressed (TorchRec makes fewer, wider ones)
  table_row_wise     table_row_wise(host_index=ranks[0] // local_world_size)
                                                    ranks host_index*local_world_size + 0..local_world_size-1
                                                    in order, ceil(rows/local_world_size) rows each (the
                                                    last shards fewer, or none)
  data_parallel      data_parallel()                every rank, the whole table, kernel "dense"
The compute kernel is TorchRec's own choice too: the helpers pick "fused" for a parameter with an
optimizer applied in backward, else "dense", so the optimizer is applied to the tables the file
says are not "dense" (another kernel is passed to the helpers that take one). Then it compares the
sharding type, kernel, ranks, shard sizes and offsets TorchRec derives with the file's, and those
of the Python file's plan, and prints {"ok", "tables": {TABLE: {"ok", "sharding_type",
"compute_kernel", "ranks", "shard_sizes", "shard_offsets", "helper", "mismatch"}}, "python": {...},
"torchrec_version"}; exit status 0 whatever it found, 1 for input it cannot read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import sys
import time
import warnings

SHARDING_TYPES = ("table_wise", "row_wise", "column_wise", "table_row_wise", "data_parallel")
DTYPES = {"fp32": "FP32", "fp16": "FP16", "bf16": "BF16"}
MS_PER_S = 1000.0


class InputError(Exception):
    pass


def _one_line(text: str, limit: int = 2000) -> str:
    line = re.sub(r"\s+", " ", str(text)).strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _few(names: list, shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)" if len(names) > shown else "")


def _versions() -> dict:
    import torch
    import torchrec

    out = {
        "torchrec_version": getattr(torchrec, "__version__", "unknown"),
        "torch_version": torch.__version__,
    }
    try:
        from importlib.metadata import version

        out["fbgemm_gpu_version"] = version("fbgemm-gpu-cpu")
    except Exception:  # noqa: BLE001, S110 - the version is informative only
        pass
    return out


def _tables(spec: dict) -> list:
    tables = spec.get("tables")
    if not isinstance(tables, list) or not tables:
        raise InputError('"tables" must be a non-empty list')
    names = set()
    for t in tables:
        for key in ("name", "num_rows", "dim"):
            if key not in t:
                raise InputError(f"a table lacks {key!r}: {t!r}")
        if t["name"] in names:
            raise InputError(f"table name {t['name']!r} repeats")
        names.add(t["name"])
        if t.get("dtype", "fp32") not in DTYPES:
            raise InputError(f"table {t['name']}: dtype {t.get('dtype')!r} is not one of {sorted(DTYPES)}")
        if int(t["num_rows"]) < 1 or int(t["dim"]) < 1:
            raise InputError(f"table {t['name']}: num_rows and dim must be positive")
    return tables


def _module(tables: list):
    """The meta-device module: one EmbeddingBagCollection, or one per weightedness under a parent.

    Returns (module, {table name: path of its EmbeddingBagCollection}).
    """
    import torch
    from torchrec import DataType, EmbeddingBagCollection, EmbeddingBagConfig

    def ebc(group, weighted):
        configs = [
            EmbeddingBagConfig(
                name=t["name"],
                num_embeddings=int(t["num_rows"]),
                embedding_dim=int(t["dim"]),
                feature_names=[f"{t['name']}__feature"],
                data_type=getattr(DataType, DTYPES[t.get("dtype", "fp32")]),
            )
            for t in group
        ]
        return EmbeddingBagCollection(tables=configs, is_weighted=weighted, device=torch.device("meta"))

    plain = [t for t in tables if not t.get("weighted", False)]
    weighted = [t for t in tables if t.get("weighted", False)]
    if not weighted or not plain:
        return ebc(tables, bool(weighted)), {t["name"]: "" for t in tables}
    parent = torch.nn.Module()
    parent.ebc = ebc(plain, False)
    parent.weighted_ebc = ebc(weighted, True)
    paths = {t["name"]: "ebc" for t in plain}
    paths.update({t["name"]: "weighted_ebc" for t in weighted})
    return parent, paths


def _submodule(module, path: str):
    return module if path == "" else module.get_submodule(path)


def _optimizer(name: str):
    import torch
    import torchrec.optim as trec_optim

    classes = {
        "rowwise_adagrad": (trec_optim.RowWiseAdagrad, {"lr": 0.01}),
        "adam": (torch.optim.Adam, {"lr": 0.001}),
        "sgd": (torch.optim.SGD, {"lr": 0.01}),
        "none": None,
    }
    if name not in classes:
        raise InputError(f"optimizer {name!r} is not one of {sorted(classes)}")
    return classes[name]


def _apply_optimizer(params, name: str) -> None:
    from torch.distributed.optim import _apply_optimizer_in_backward

    found = _optimizer(name)
    params = list(params)
    if found is not None and params:
        _apply_optimizer_in_backward(found[0], params, found[1])


def _shards_of(sharding, num_rows: int, dim: int) -> tuple[list, list, list]:
    """(ranks, sizes, offsets) of a ParameterSharding; data parallel has no spec: whole table per rank."""
    ranks = [int(r) for r in (sharding.ranks or [])]
    if sharding.sharding_spec is None:
        return ranks, [[num_rows, dim] for _ in ranks], [[0, 0] for _ in ranks]
    shards = sharding.sharding_spec.shards
    return (
        [int(s.placement.rank()) for s in shards],
        [[int(x) for x in s.shard_sizes] for s in shards],
        [[int(x) for x in s.shard_offsets] for s in shards],
    )


# --------------------------------------------------------------------------------------------- plan


class _TimeoutFlag(logging.Handler):
    """Notes TorchRec's "Exceeded time limit" message: the proposers stopped at timeout_seconds."""

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.seen = False

    def emit(self, record):
        if str(record.getMessage()).startswith("Exceeded time limit"):
            self.seen = True


def _topology_and_reservation(spec: dict, world: int, local: int):
    """TorchRec's Topology (bandwidths in bytes per ms) and the storage reservation policy of the spec."""
    from torchrec.distributed.planner import Topology
    from torchrec.distributed.planner.storage_reservations import (
        FixedPercentageStorageReservation,
        HeuristicalStorageReservation,
    )

    bw = {}
    for key, name in (
        ("hbm_bandwidth_bytes_per_s", "hbm_mem_bw"),
        ("ddr_bandwidth_bytes_per_s", "ddr_mem_bw"),
        ("hbm_to_ddr_bandwidth_bytes_per_s", "hbm_to_ddr_mem_bw"),
        ("intra_host_bandwidth_bytes_per_s", "intra_host_bw"),
        ("inter_host_bandwidth_bytes_per_s", "inter_host_bw"),
    ):
        if spec.get(key) is not None:
            bw[name] = float(spec[key]) / MS_PER_S  # TorchRec: bytes per millisecond
    topology = Topology(
        world_size=world,
        local_world_size=local,
        compute_device=spec.get("compute_device", "cuda"),
        hbm_cap=int(spec["hbm_bytes_per_rank"]) if spec.get("hbm_bytes_per_rank") is not None else None,
        ddr_cap=int(spec["ddr_bytes_per_rank"]) if spec.get("ddr_bytes_per_rank") is not None else None,
        **bw,
    )
    fraction = float(spec.get("storage_reservation_fraction", 0.15))
    policy = spec.get("storage_reservation", "heuristical")
    if policy == "heuristical":
        reservation = HeuristicalStorageReservation(percentage=fraction)
    elif policy == "fixed_percentage":
        reservation = FixedPercentageStorageReservation(percentage=fraction)
    else:
        raise InputError(f"storage_reservation {policy!r} is not 'heuristical' or 'fixed_percentage'")
    return topology, reservation, policy


def _estimate(options: list, topology, names: list, reserved) -> dict:
    """TorchRec's estimate of placed sharding options (every shard with a rank, a Perf and a Storage).

    max_rank_perf_ms is NoopPerfModel.rate, the score EmbeddingShardingPlanner keeps the lowest of;
    "fits" says whether every rank's shards fit the capacity left after the storage reservation
    (what GreedyPerfPartitioner checks with Storage.fits_in).
    """
    from torchrec.distributed.planner.perf_models import NoopPerfModel

    world = topology.world_size
    perf_ms = [0.0] * world
    hbm = [0] * world
    ddr = [0] * world
    parts = ("fwd_compute", "fwd_comms", "bwd_compute", "bwd_comms", "input_dist_comms", "prefetch_compute")
    per_rank = {f"{part}_ms": [0.0] * world for part in parts}
    per_table = {}
    for option in options:
        row = {
            "fwd_compute_ms": 0.0,
            "fwd_comms_ms": 0.0,
            "bwd_compute_ms": 0.0,
            "bwd_comms_ms": 0.0,
            "input_dist_comms_ms": 0.0,
            "prefetch_compute_ms": 0.0,
            "total_ms": 0.0,
            "hbm_bytes": 0,
            "ddr_bytes": 0,
        }
        for shard in option.shards:
            p, s = shard.perf, shard.storage
            if p is not None:
                row["fwd_compute_ms"] += p.fwd_compute
                row["fwd_comms_ms"] += p.fwd_comms
                row["bwd_compute_ms"] += p.bwd_compute
                row["bwd_comms_ms"] += p.bwd_comms
                row["input_dist_comms_ms"] += p.input_dist_comms
                row["prefetch_compute_ms"] += p.prefetch_compute
                row["total_ms"] += p.total
                perf_ms[shard.rank] += p.total
                for part in parts:
                    per_rank[f"{part}_ms"][shard.rank] += getattr(p, part)
            if s is not None:
                row["hbm_bytes"] += int(s.hbm)
                row["ddr_bytes"] += int(s.ddr)
                hbm[shard.rank] += int(s.hbm)
                ddr[shard.rank] += int(s.ddr)
        per_table[option.name] = row
    per_table = {name: per_table[name] for name in names if name in per_table}
    rated = options and all(s.perf is not None and s.rank is not None for o in options for s in o.shards)
    cap_hbm = [int(d.storage.hbm) for d in reserved.devices] if reserved else None
    cap_ddr = [int(d.storage.ddr) for d in reserved.devices] if reserved else None
    return {
        "per_rank_perf_ms": perf_ms,
        "per_rank_hbm_bytes": hbm,
        "per_rank_ddr_bytes": ddr,
        "max_rank_perf_ms": float(NoopPerfModel(topology).rate(options)) if rated else max(perf_ms, default=0.0),
        "per_rank_parts_ms": per_rank,
        "tables": per_table,
        "hbm_bytes_per_rank_after_reservation": cap_hbm[0] if cap_hbm else None,
        "fits": (
            all(h <= c for h, c in zip(hbm, cap_hbm)) and all(d <= c for d, c in zip(ddr, cap_ddr))
            if cap_hbm
            else None
        ),
    }


def run_plan(spec: dict) -> tuple[dict, int]:
    import torch  # noqa: F401
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints

    tables = _tables(spec)
    world = int(spec["world_size"])
    local = int(spec.get("local_world_size", world))
    if world < 1 or local < 1 or world % local:
        raise InputError(f"world_size {world} must be a positive multiple of local_world_size {local}")
    kinds = list(spec.get("sharding_types", SHARDING_TYPES))
    kernels = list(spec.get("compute_kernels", ["fused"]))
    optimizer = spec.get("optimizer", "rowwise_adagrad")
    _optimizer(optimizer)
    no_dp, odd_dim = [], []

    module, _paths = _module(tables)
    _apply_optimizer(module.parameters(), optimizer)

    constraints = {}
    for t in tables:
        t_kinds = list(t.get("sharding_types", kinds))
        t_kernels = list(t.get("compute_kernels", kernels))
        constraints[t["name"]] = ParameterConstraints(
            sharding_types=t_kinds,
            compute_kernels=t_kernels,
            pooling_factors=[float(t.get("pooling_factor", 1.0))],
            is_weighted=bool(t.get("weighted", False)),
            min_partition=t.get("min_partition"),
        )
        if "data_parallel" in t_kinds and "dense" not in t_kernels:
            no_dp.append(t["name"])
        if int(t["dim"]) % 4 and any(k.startswith("fused") for k in t_kernels):
            odd_dim.append(t["name"])
    notes = []
    if no_dp:
        notes.append(
            f"data_parallel is offered to {len(no_dp)} table(s) ({_few(no_dp)}) but TorchRec runs it only "
            "with the 'dense' kernel, which their compute_kernels leave out, so it is never chosen"
        )
    if odd_dim:
        notes.append(
            f"{len(odd_dim)} table(s) ({_few(odd_dim)}) have a dim that is not a multiple of 4: TorchRec's "
            "planner accepts them, but FBGEMM's fused (split TBE) kernels refuse such a table when it is "
            "sharded"
        )

    topology, reservation, policy = _topology_and_reservation(spec, world, local)
    timeout = spec.get("timeout_s")
    planner = EmbeddingShardingPlanner(
        topology=topology,
        batch_size=int(spec.get("batch_size_per_rank", 512)),
        constraints=constraints,
        storage_reservation=reservation,
        stats=[],
        debug=False,
        timeout_seconds=max(1, math.ceil(float(timeout))) if timeout else None,
    )
    sharders = [EmbeddingBagCollectionSharder()]

    timed_out = _TimeoutFlag()
    planner_logger = logging.getLogger("torchrec.distributed.planner.planners")
    planner_logger.addHandler(timed_out)
    planner_logger.setLevel(logging.INFO)  # TorchRec says it ran out of time at INFO level
    start = time.perf_counter()
    try:
        sharding_plan = planner.plan(module, sharders)
    except Exception as exc:  # noqa: BLE001 - TorchRec's PlannerError and the asserts of its validators
        print(f"TorchRec could not plan: {exc}", file=sys.stderr)
        return {
            "error": _one_line(f"{type(exc).__name__}: {exc}"),
            **_versions(),
            "planning_s": time.perf_counter() - start,
        }, 1
    planning_s = time.perf_counter() - start

    best = planner._best_plan or []
    by_name = {t["name"]: t for t in tables}
    plan = {}
    for module_plan in sharding_plan.plan.values():
        for name, sharding in module_plan.items():
            t = by_name[name]
            ranks, sizes, offsets = _shards_of(sharding, int(t["num_rows"]), int(t["dim"]))
            plan[name] = {
                "sharding_type": sharding.sharding_type,
                "compute_kernel": sharding.compute_kernel,
                "ranks": ranks,
                "shard_sizes": sizes,
                "shard_offsets": offsets,
            }
    plan = {name: plan[name] for name in by_name if name in plan}
    missing = sorted(set(by_name) - set(plan))
    if missing:
        return {"error": f"TorchRec's plan leaves out tables {missing}", **_versions()}, 1

    estimate = _estimate(best, topology, list(by_name), reservation.last_reserved_topology)
    estimate.update(
        {
            "storage_reservation": policy,
            "num_proposals": planner._num_proposals,
            "num_plans": planner._num_plans,
            "timed_out": timed_out.seen,
        }
    )
    out = {**_versions(), "planning_s": planning_s, "plan": plan, "estimate": estimate}
    if notes:
        out["notes"] = notes
    return out, 0


# ----------------------------------------------------------------------------------------- readback


def _generator(entry: dict, local: int, kernel: str | None):
    """TorchRec's helper for a plan entry, and how it was called (for the report)."""
    from torchrec.distributed import sharding_plan as sp

    kind = entry.get("sharding_type")
    ranks = [int(r) for r in entry.get("ranks") or []]
    passed = {} if kernel in (None, "fused", "dense") else {"compute_kernel": kernel}
    extra = "".join(f", {k}={v!r}" for k, v in passed.items())
    if kind == "table_wise":
        if len(ranks) != 1:
            raise InputError(f"table_wise needs exactly one rank, the file has {ranks}")
        return sp.table_wise(rank=ranks[0], **passed), f"table_wise(rank={ranks[0]}{extra})"
    if kind == "row_wise":
        return sp.row_wise(**passed), f"row_wise({extra[2:]})"
    if kind == "column_wise":
        if not ranks:
            raise InputError("column_wise needs ranks")
        return sp.column_wise(ranks=ranks, **passed), f"column_wise(ranks={ranks}{extra})"
    if kind == "table_row_wise":
        if not ranks:
            raise InputError("table_row_wise needs ranks")
        host = ranks[0] // local
        return sp.table_row_wise(host_index=host), f"table_row_wise(host_index={host})"
    if kind == "data_parallel":
        return sp.data_parallel(), "data_parallel()"
    raise InputError(f"sharding type {kind!r} is not one of {list(SHARDING_TYPES)}")


def _compare(want: dict, got: dict, mine: str = "file", theirs: str = "TorchRec") -> str | None:
    problems = []
    for key in ("sharding_type", "compute_kernel", "ranks", "shard_sizes", "shard_offsets"):
        if key == "compute_kernel" and want.get(key) is None:
            continue
        if want.get(key) != got.get(key):
            problems.append(f"{key}: {mine} {want.get(key)!r}, {theirs} {got.get(key)!r}")
    return "; ".join(problems) or None


def _load_python_plan(path: str) -> dict:
    """{table: ParameterSharding} from a file defining `plan` (ShardingPlan) or `module_plan`."""
    namespace = {"__name__": "__torchrec_plan_file__", "__file__": path}
    with open(path) as f:
        code = compile(f.read(), path, "exec")
    with contextlib.redirect_stdout(sys.stderr):
        exec(code, namespace)  # noqa: S102 - reading the plan file is the point
    found = {}
    if "plan" in namespace:
        plan = namespace["plan"]
        modules = getattr(plan, "plan", None)
        if not isinstance(modules, dict):
            raise InputError(f"{path}: `plan` is a {type(plan).__name__}, not a ShardingPlan")
        for module_plan in modules.values():
            for name, sharding in module_plan.items():
                if name in found:
                    raise InputError(f"{path}: table {name!r} appears in two module plans")
                found[name] = sharding
    elif "module_plan" in namespace:
        found.update(namespace["module_plan"].items())
    else:
        raise InputError(f"{path} defines neither `plan` nor `module_plan`")
    return found


def run_readback(spec: dict) -> tuple[dict, int]:
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.sharding_plan import construct_module_sharding_plan, table_wise
    from torchrec.distributed.types import ParameterSharding

    tables = _tables(spec)
    world = int(spec["world_size"])
    local = int(spec.get("local_world_size", world))
    file_plan = spec.get("plan")
    if not isinstance(file_plan, dict):
        raise InputError('"plan" must be an object keyed by table name')
    device = spec.get("compute_device", "cuda")
    by_name = {t["name"]: t for t in tables}

    module, paths = _module(tables)
    fused_like = [
        name
        for name, entry in file_plan.items()
        if name in by_name and entry.get("compute_kernel", "fused") != "dense"
    ]
    optimizer = spec.get("optimizer", "rowwise_adagrad")
    if optimizer == "none":
        optimizer = "rowwise_adagrad"  # only marks the parameters: the helpers then choose "fused"
    for name in fused_like:
        ebc = _submodule(module, paths[name])
        _apply_optimizer([ebc.embedding_bags[name].weight], optimizer)

    sharder = EmbeddingBagCollectionSharder()
    report, generators, helpers = {}, {}, {}
    for name in by_name:
        entry = file_plan.get(name)
        if entry is None:
            report[name] = {"ok": False, "mismatch": "the plan file has no entry for this table"}
            continue
        try:
            generators[name], helpers[name] = _generator(entry, local, entry.get("compute_kernel"))
        except InputError as exc:
            report[name] = {
                "ok": False,
                "sharding_type": entry.get("sharding_type"),
                "mismatch": _one_line(exc),
            }

    def construct(ebc, per_param):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module_plan = construct_module_sharding_plan(
                ebc, per_param, sharder=sharder, local_size=local, world_size=world, device_type=device
            )
        return module_plan, [_one_line(w.message) for w in caught]

    shardings, warned = {}, {}
    for path in sorted(set(paths.values())):
        ebc = _submodule(module, path)
        names = [n for n in sharder.shardable_parameters(ebc) if n in generators]
        # construct_module_sharding_plan wants every shardable parameter of the module: one that
        # has no helper gets table_wise(rank=0), which is not looked at.
        per_param = {n: generators.get(n, table_wise(rank=0)) for n in sharder.shardable_parameters(ebc)}
        try:
            module_plan, caught = construct(ebc, per_param)
            if caught:
                raise ValueError("warned")  # find out which table each warning is about
            shardings.update((n, module_plan[n]) for n in names)
        except Exception:  # noqa: BLE001 - retried table by table below
            # One table at a time, to tell which one TorchRec refuses or warns about: the call that
            # construct_module_sharding_plan makes for each parameter.
            params = sharder.shardable_parameters(ebc)
            for n in names:
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        shardings[n] = generators[n](params[n], local, world, device, sharder)
                    warned[n] = [_one_line(w.message) for w in caught]
                except Exception as exc:  # noqa: BLE001 - reported for the table
                    report[n] = {
                        "ok": False,
                        "sharding_type": file_plan[n].get("sharding_type"),
                        "helper": helpers[n],
                        "mismatch": _one_line(f"TorchRec's helper refused it: {type(exc).__name__}: {exc}"),
                    }

    for name, sharding in shardings.items():
        t, entry = by_name[name], file_plan[name]
        ranks, sizes, offsets = _shards_of(sharding, int(t["num_rows"]), int(t["dim"]))
        got = {
            "sharding_type": sharding.sharding_type,
            "compute_kernel": sharding.compute_kernel,
            "ranks": [int(r) for r in sharding.ranks],
            "shard_sizes": sizes,
            "shard_offsets": offsets,
        }
        problems = [p for p in [_compare(entry, got)] if p]
        if sharding.sharding_spec is not None and ranks != got["ranks"]:
            problems.append(f"TorchRec's shard placements {ranks} differ from its ranks {got['ranks']}")
        problems += [f"TorchRec warned: {w}" for w in warned.get(name, [])]
        report[name] = {
            "ok": not problems,
            **got,
            "helper": helpers[name],
            "mismatch": "; ".join(problems) or None,
        }
    report = {name: report[name] for name in by_name if name in report}
    for name in sorted(set(file_plan) - set(by_name)):
        report[name] = {"ok": False, "mismatch": 'the plan file names a table that is not in "tables"'}

    out = {"ok": all(r["ok"] for r in report.values()), "tables": report, **_versions()}

    if spec.get("python"):
        try:
            python_plan = _load_python_plan(spec["python"])
        except InputError as exc:
            out["python"] = {"ok": False, "error": _one_line(exc)}
        except Exception as exc:  # noqa: BLE001 - reported as the file's error
            out["python"] = {"ok": False, "error": _one_line(f"{type(exc).__name__}: {exc}")}
        else:
            py_report = {}
            for name in sorted(set(python_plan) | set(file_plan)):
                entry, sharding = file_plan.get(name), python_plan.get(name)
                if entry is None or sharding is None:
                    where = "JSON plan" if entry is None else "Python plan"
                    py_report[name] = {"ok": False, "mismatch": f"the {where} has no entry for this table"}
                    continue
                if not isinstance(sharding, ParameterSharding):
                    py_report[name] = {
                        "ok": False,
                        "mismatch": f"a {type(sharding).__name__}, not a ParameterSharding",
                    }
                    continue
                t = by_name.get(name)
                if t is None:
                    py_report[name] = {"ok": False, "mismatch": 'not in "tables"'}
                    continue
                ranks, sizes, offsets = _shards_of(sharding, int(t["num_rows"]), int(t["dim"]))
                got = {
                    "sharding_type": sharding.sharding_type,
                    "compute_kernel": sharding.compute_kernel,
                    "ranks": [int(r) for r in sharding.ranks or []],
                    "shard_sizes": sizes,
                    "shard_offsets": offsets,
                }
                problems = [p for p in [_compare(entry, got, "JSON", "Python")] if p]
                if sharding.sharding_spec is not None:
                    if ranks != got["ranks"]:
                        problems.append(f"shard placements {ranks} differ from ranks {got['ranks']}")
                    for shard in sharding.sharding_spec.shards:
                        rank, dev = shard.placement.rank(), shard.placement.device()
                        if dev.type != device or (dev.index is not None and dev.index != rank % local):
                            problems.append(
                                f"shard placement {shard.placement} is not rank:{rank}/"
                                f"{device}:{rank % local}"
                            )
                            break
                py_report[name] = {"ok": not problems, **got, "mismatch": "; ".join(problems) or None}
            out["python"] = {"ok": all(r["ok"] for r in py_report.values()), "tables": py_report}
        out["ok"] = out["ok"] and out["python"]["ok"]
    return out, 0


# ----------------------------------------------------------------------------------------- estimate


def _price_one(spec: dict, tables: list, module, topology, reservation, plan: dict) -> tuple[dict, list]:
    """TorchRec's estimate of one given plan ({table: {sharding_type, compute_kernel, ranks,
    shard_sizes, shard_offsets}}); returns ({"plan", "estimate", "notes"}, notes)."""
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import ParameterConstraints
    from torchrec.distributed.planner.enumerators import EmbeddingEnumerator
    from torchrec.distributed.planner.types import Shard

    if not isinstance(plan, dict):
        raise InputError("a plan must be an object keyed by table name")
    by_name = {t["name"]: t for t in tables}
    missing = [n for n in by_name if n not in plan]
    extra = sorted(set(plan) - set(by_name))
    if missing:
        raise InputError(f"the plan has no entry for table(s) {_few(missing)}")
    if extra:
        raise InputError(f'the plan names table(s) that are not in "tables": {_few(extra)}')
    world = topology.world_size
    constraints = {}
    for name, t in by_name.items():
        entry = plan[name]
        kind = entry.get("sharding_type")
        if kind not in SHARDING_TYPES:
            raise InputError(f"table {name}: sharding type {kind!r} is not one of {list(SHARDING_TYPES)}")
        ranks = entry.get("ranks")
        if not isinstance(ranks, list) or not ranks or not all(isinstance(r, int) and 0 <= r < world for r in ranks):
            raise InputError(f"table {name}: ranks {ranks!r} must be a non-empty list of ranks in 0..{world - 1}")
        kernel = entry.get("compute_kernel") or ("dense" if kind == "data_parallel" else "fused")
        min_partition = t.get("min_partition")
        sizes = entry.get("shard_sizes")
        if kind == "column_wise" and sizes:
            widths = {int(size[1]) for size in sizes}
            if len(widths) == 1:
                min_partition = widths.pop()  # TorchRec's column shards are min_partition wide (rounded to x4)
        constraints[name] = ParameterConstraints(
            sharding_types=[kind],
            compute_kernels=[kernel],
            pooling_factors=[float(t.get("pooling_factor", 1.0))],
            is_weighted=bool(t.get("weighted", False)),
            min_partition=min_partition,
        )
    sharders = [EmbeddingBagCollectionSharder()]
    batch_size = int(spec.get("batch_size_per_rank", 512))
    reserved = reservation.reserve(
        topology=topology, batch_size=batch_size, module=module, sharders=sharders, constraints=constraints
    )
    enumerator = EmbeddingEnumerator(topology=topology, batch_size=batch_size, constraints=constraints)
    overrides = spec.get("estimator_overrides") or {}
    unknown = sorted(set(overrides) - {"block_usage_penalty", "min_dim_for_lookup"})
    if unknown:
        raise InputError(f"estimator_overrides: {unknown} (known: block_usage_penalty, min_dim_for_lookup)")
    for estimator in enumerator._estimators:
        config = getattr(estimator, "_config", None)
        if config is not None:  # the perf estimator: its evaluators read these flags off the config
            for key, value in overrides.items():
                setattr(config, f"_use_{key}", bool(value))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a column width TorchRec rounds: handled below
        options = enumerator.enumerate(module=module, sharders=sharders)
    found = {}
    for option in options:
        if option.name in found:
            raise InputError(f"table {option.name}: TorchRec enumerated more than one option for one kind and kernel")
        found[option.name] = option
    reshaped, notes = [], []
    for name in by_name:
        option, entry = found[name], plan[name]
        ranks = [int(r) for r in entry["ranks"]]
        sizes, offsets = entry.get("shard_sizes"), entry.get("shard_offsets")
        if sizes is not None:
            sizes = [[int(x) for x in size] for size in sizes]
            offsets = [[int(x) for x in o] for o in offsets] if offsets is not None else None
            if offsets is None or len(offsets) != len(sizes):
                raise InputError(f"table {name}: shard_sizes and shard_offsets must be lists of the same length")
            theirs = [list(s.size) for s in option.shards], [list(s.offset) for s in option.shards]
            if (sizes, offsets) != theirs:
                # Not TorchRec's own split (a column width it would round, say): the given shards,
                # estimated by the same estimators.
                option.shards = [Shard(size=size, offset=o) for size, o in zip(sizes, offsets)]
                reshaped.append(option)
        if len(option.shards) != len(ranks):
            raise InputError(
                f"table {name}: {len(ranks)} ranks for {len(option.shards)} shards of a {option.sharding_type} table"
            )
        for shard, rank in zip(option.shards, ranks):
            shard.rank = rank
    if reshaped:
        enumerator.populate_estimates(reshaped)
        names = [o.name for o in reshaped]
        notes.append(
            f"{len(names)} table(s) ({_few(names)}) have shards TorchRec's enumerator would not make; "
            "they are estimated with the given shards"
        )
    ordered = [found[name] for name in by_name]
    placed = {}
    for option in ordered:
        placed[option.name] = {
            "sharding_type": option.sharding_type,
            "compute_kernel": option.compute_kernel,
            "ranks": [int(s.rank) for s in option.shards],
            "shard_sizes": [[int(x) for x in s.size] for s in option.shards],
            "shard_offsets": [[int(x) for x in s.offset] for s in option.shards],
        }
    estimate = _estimate(ordered, topology, list(by_name), reserved)
    return {"plan": placed, "estimate": estimate, **({"notes": notes} if notes else {})}, notes


def run_estimate(spec: dict) -> tuple[dict, int]:
    tables = _tables(spec)
    world = int(spec["world_size"])
    local = int(spec.get("local_world_size", world))
    if world < 1 or local < 1 or world % local:
        raise InputError(f"world_size {world} must be a positive multiple of local_world_size {local}")
    single = "plans" not in spec
    plans = {"plan": spec.get("plan")} if single else spec.get("plans")
    if not isinstance(plans, dict) or not plans:
        raise InputError('"plan" must be an object keyed by table name, or "plans" one keyed by label')
    optimizer = spec.get("optimizer", "rowwise_adagrad")
    _optimizer(optimizer)
    module, _paths = _module(tables)
    _apply_optimizer(module.parameters(), optimizer)
    topology, reservation, policy = _topology_and_reservation(spec, world, local)
    out = {**_versions(), "estimates": {}}
    started = time.perf_counter()
    for label, plan in plans.items():
        one = time.perf_counter()
        try:
            priced, _notes = _price_one(spec, tables, module, topology, reservation, plan)
        except (InputError, RuntimeError, ValueError, KeyError, TypeError) as exc:
            if single:
                raise InputError(f"{type(exc).__name__}: {exc}") from exc
            priced = {"error": _one_line(f"{type(exc).__name__}: {exc}")}
        else:
            priced["estimate"]["storage_reservation"] = policy
        priced["estimate_s"] = time.perf_counter() - one
        out["estimates"][label] = priced
    out["estimate_s"] = time.perf_counter() - started
    if single:
        out.update(out.pop("estimates")["plan"])
    return out, 0


def main(argv: list[str]) -> int:
    if os.environ.get("PYTHONHASHSEED") is None:
        # TorchRec's proposers break ties between equally rated options in an order that follows
        # string hashes: fix the seed so the same input gives the same plan in every process.
        os.execve(sys.executable, [sys.executable, *argv], {**os.environ, "PYTHONHASHSEED": "0"})
    modes = {"plan": run_plan, "readback": run_readback, "estimate": run_estimate}
    if len(argv) != 3 or argv[1] not in modes:
        print(__doc__.split("\n\n")[0], file=sys.stderr)
        print("usage: torchrec_plan.py plan|readback|estimate IN.json", file=sys.stderr)
        return 2
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setLevel(logging.WARNING)  # also for loggers set lower to catch one message
    logging.basicConfig(handlers=[to_stderr], level=logging.WARNING)
    warnings.simplefilter("ignore", FutureWarning)
    try:
        with open(argv[2]) as f:
            spec = json.load(f)
        if not isinstance(spec, dict):
            raise InputError("the input must be a JSON object")
        with contextlib.redirect_stdout(sys.stderr):
            out, rc = modes[argv[1]](spec)
    except (InputError, KeyError, ValueError, TypeError, AttributeError, OSError) as exc:
        out, rc = {"error": _one_line(f"{type(exc).__name__}: {exc}")}, 1
    print(json.dumps(out))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
