"""TorchRec's own sharding planner and plan helpers, through planner/frameworks/torchrec_plan.py.

A plan TorchRec makes for a small DLRM (6 tables on 2 hosts of 2 ranks) reads back table by table
with TorchRec's sharding_plan helpers (table_wise, row_wise, column_wise, table_row_wise,
data_parallel) and construct_module_sharding_plan; a plan with a wrong shard size does not; a
ShardingPlan written as Python reads back against its JSON twin; a model that cannot fit gets
TorchRec's refusal as one error line.

Needs .venv-torchrec (built by .ci/run; or PLANNER_TORCHREC_PYTHON); without it these tests skip.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT

SCRIPT = ROOT / "planner" / "frameworks" / "torchrec_plan.py"
PYTHON = Path(os.environ.get("PLANNER_TORCHREC_PYTHON", ROOT / ".venv-torchrec" / "bin" / "python"))
TIMEOUT_S = 60

pytestmark = pytest.mark.skipif(
    not PYTHON.exists(),
    reason=f"TorchRec environment not installed ({PYTHON}; .ci/run builds .venv-torchrec)",
)

TABLES = [
    {
        "name": "user_id",
        "num_rows": 400_000,
        "dim": 128,
        "pooling_factor": 1.0,
        "weighted": False,
        "dtype": "fp32",
    },
    {
        "name": "item_id",
        "num_rows": 2_000_000,
        "dim": 64,
        "pooling_factor": 20.0,
        "weighted": False,
        "dtype": "fp16",
    },
    {
        "name": "category",
        "num_rows": 1_000,
        "dim": 16,
        "pooling_factor": 3.0,
        "weighted": False,
        "dtype": "fp32",
    },
    {
        "name": "history",
        "num_rows": 600_000,
        "dim": 256,
        "pooling_factor": 40.0,
        "weighted": False,
        "dtype": "fp32",
    },
    {
        "name": "scores",
        "num_rows": 50_000,
        "dim": 32,
        "pooling_factor": 8.0,
        "weighted": True,
        "dtype": "fp16",
    },
    {"name": "tiny", "num_rows": 7, "dim": 8, "pooling_factor": 1.0, "weighted": False, "dtype": "fp32"},
]
TOPOLOGY = {"world_size": 4, "local_world_size": 2}
PLAN_INPUT = {
    "tables": TABLES,
    **TOPOLOGY,
    "batch_size_per_rank": 512,
    "hbm_bytes_per_rank": 8e10,
    "ddr_bytes_per_rank": 1e12,
    "hbm_bandwidth_bytes_per_s": 2e12,
    "intra_host_bandwidth_bytes_per_s": 3e11,
    "inter_host_bandwidth_bytes_per_s": 2.5e10,
    "storage_reservation_fraction": 0.15,
    "sharding_types": ["table_wise", "row_wise", "column_wise", "table_row_wise", "data_parallel"],
    "compute_kernels": ["fused", "dense"],
    "optimizer": "rowwise_adagrad",
    "timeout_s": 20,
}


def run(command: str, spec: dict, tmp_path: Path) -> tuple[dict, int]:
    path = tmp_path / f"{command}-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run(
        [str(PYTHON), str(SCRIPT), command, str(path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert done.stdout.strip(), done.stderr[-3000:]
    return json.loads(done.stdout), done.returncode


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> dict:
    out, rc = run("plan", PLAN_INPUT, tmp_path_factory.mktemp("torchrec"))
    assert rc == 0, out
    return out


def readback(plan: dict, tmp_path: Path, **extra) -> dict:
    out, rc = run("readback", {"tables": TABLES, **TOPOLOGY, "plan": plan, **extra}, tmp_path)
    assert rc == 0, out
    return out


def test_torchrec_plan_reads_back(planned, tmp_path):
    plan, estimate = planned["plan"], planned["estimate"]
    assert planned["torchrec_version"] and planned["planning_s"] > 0
    assert set(plan) == {t["name"] for t in TABLES}
    for name, entry in plan.items():
        assert len(entry["ranks"]) == len(entry["shard_sizes"]) == len(entry["shard_offsets"]), name
        assert all(0 <= r < TOPOLOGY["world_size"] for r in entry["ranks"]), name
    assert len(estimate["per_rank_perf_ms"]) == len(estimate["per_rank_hbm_bytes"]) == TOPOLOGY["world_size"]
    assert estimate["max_rank_perf_ms"] == max(estimate["per_rank_perf_ms"]) > 0
    assert set(estimate["tables"]) == set(plan)
    assert all(row["fwd_compute_ms"] > 0 and row["hbm_bytes"] > 0 for row in estimate["tables"].values())

    back = readback(plan, tmp_path)
    assert back["ok"], back
    for name in plan:
        row = back["tables"][name]
        assert row["ok"] and row["mismatch"] is None, (name, row)
        assert row["shard_sizes"] == plan[name]["shard_sizes"], name


def test_wrong_shard_size_is_a_mismatch(planned, tmp_path):
    plan = copy.deepcopy(planned["plan"])
    name = next(n for n, e in plan.items() if e["shard_sizes"][0][0] > 1)
    plan[name]["shard_sizes"][0][0] -= 1
    back = readback(plan, tmp_path)
    assert not back["ok"]
    row = back["tables"][name]
    assert not row["ok"] and "shard_sizes" in row["mismatch"], row
    assert all(back["tables"][other]["ok"] for other in plan if other != name)


def test_every_helper_and_a_python_plan(tmp_path):
    """Each sharding type by hand, read back from JSON and from a ShardingPlan written as Python."""
    plan = {
        "user_id": {
            "sharding_type": "row_wise",
            "compute_kernel": "fused",
            "ranks": [0, 1, 2, 3],
            "shard_sizes": [[100_000, 128]] * 4,
            "shard_offsets": [[0, 0], [100_000, 0], [200_000, 0], [300_000, 0]],
        },
        "item_id": {
            "sharding_type": "column_wise",
            "compute_kernel": "fused",
            "ranks": [3, 1],
            "shard_sizes": [[2_000_000, 32]] * 2,
            "shard_offsets": [[0, 0], [0, 32]],
        },
        "category": {
            "sharding_type": "data_parallel",
            "compute_kernel": "dense",
            "ranks": [0, 1, 2, 3],
            "shard_sizes": [[1_000, 16]] * 4,
            "shard_offsets": [[0, 0]] * 4,
        },
        "history": {
            "sharding_type": "table_row_wise",
            "compute_kernel": "fused",
            "ranks": [2, 3],
            "shard_sizes": [[300_000, 256]] * 2,
            "shard_offsets": [[0, 0], [300_000, 0]],
        },
        "scores": {
            "sharding_type": "table_wise",
            "compute_kernel": "fused",
            "ranks": [2],
            "shard_sizes": [[50_000, 32]],
            "shard_offsets": [[0, 0]],
        },
        "tiny": {
            "sharding_type": "row_wise",
            "compute_kernel": "fused",
            "ranks": [0, 1, 2, 3],
            "shard_sizes": [[2, 8], [2, 8], [2, 8], [1, 8]],
            "shard_offsets": [[0, 0], [2, 0], [4, 0], [6, 0]],
        },
    }
    lines = [
        "from torchrec.distributed.types import (EmbeddingModuleShardingPlan, EnumerableShardingSpec,",
        "    ParameterSharding, ShardingPlan, ShardMetadata)",
        "def ps(kind, kernel, ranks, sizes, offsets):",
        "    spec = None if kind == 'data_parallel' else EnumerableShardingSpec([ShardMetadata(",
        "        shard_sizes=s, shard_offsets=o, placement=f'rank:{r}/cuda:{r % 2}')",
        "        for r, s, o in zip(ranks, sizes, offsets)])",
        "    return ParameterSharding(sharding_type=kind, compute_kernel=kernel, ranks=ranks,",
        "                             sharding_spec=spec)",
        "plan = ShardingPlan({'': EmbeddingModuleShardingPlan({",
    ]
    for name, e in plan.items():
        sizes = [[300_000, 256], [299_999, 256]] if name == "history" else e["shard_sizes"]  # one wrong shard
        lines.append(
            f"    {name!r}: ps({e['sharding_type']!r}, {e['compute_kernel']!r}, {e['ranks']}, {sizes}, "
            f"{e['shard_offsets']}),"
        )
    lines.append("})})")
    python_file = tmp_path / "plan.py"
    python_file.write_text("\n".join(lines) + "\n")

    back = readback(plan, tmp_path, python=str(python_file))
    assert all(row["ok"] for row in back["tables"].values()), back["tables"]
    helpers = {name: row["helper"] for name, row in back["tables"].items()}
    assert helpers["history"] == "table_row_wise(host_index=1)"
    assert helpers["item_id"] == "column_wise(ranks=[3, 1])"
    python = back["python"]["tables"]
    assert not python["history"]["ok"] and "shard_sizes" in python["history"]["mismatch"]
    assert all(python[name]["ok"] for name in plan if name != "history"), python
    assert not back["ok"]


def test_a_model_that_does_not_fit_is_refused(tmp_path):
    # About 1 GB of tables (weights and optimizer state) on 4 x 0.2 GB of HBM; the fused kernel
    # keeps everything in HBM, so the terabyte of DDR does not help.
    out, rc = run("plan", {**PLAN_INPUT, "hbm_bytes_per_rank": 2e8}, tmp_path)
    assert rc != 0 and "insufficient storage" in out["error"] and "\n" not in out["error"], out
