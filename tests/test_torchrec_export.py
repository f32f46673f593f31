"""DLRM plans exported as TorchRec sharding plans read back table by table with TorchRec's own
types (planner/frameworks/torchrec_plan.py readback in .venv-torchrec), in both renderings, and
TorchRec's own plans convert to ours and price. Skips where .venv-torchrec is not built."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from planner.cli import main
from planner.export.base import ExportError
from planner.export.torchrec import plan_from_torchrec, torchrec_document, torchrec_python
from planner.recsys.plan import ShardingPlan, TableSharding, check_plan

from .conftest import ROOT
from .test_recsys_cost import model, problem

SCRIPT = ROOT / "planner" / "frameworks" / "torchrec_plan.py"
PYTHON = Path(os.environ.get("PLANNER_TORCHREC_PYTHON", ROOT / ".venv-torchrec" / "bin" / "python"))
needs_torchrec = pytest.mark.skipif(not PYTHON.exists(), reason=f"TorchRec environment not installed ({PYTHON})")


def every_type():
    p = problem(model(count=6, num_rows=1000, dim=16))
    plan = ShardingPlan(tables=[
        TableSharding(table="t", count=2, sharding="table_wise", ranks=[3]),
        TableSharding(table="t", sharding="row_wise"),
        TableSharding(table="t", sharding="column_wise", ranks=[1, 6]),
        TableSharding(table="t", sharding="table_row_wise", host=1),
        TableSharding(table="t", sharding="data_parallel"),
    ])
    assert check_plan(plan, p) == []
    return p, plan


def readback(tmp_path, document: dict, python_text: str | None = None) -> dict:
    spec = dict(document)
    if python_text is not None:
        path = tmp_path / "plan.py"
        path.write_text(python_text)
        spec["python"] = str(path)
    source = tmp_path / "readback.json"
    source.write_text(json.dumps(spec))
    done = subprocess.run([str(PYTHON), str(SCRIPT), "readback", str(source)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_shards_follow_torchrecs_helpers():
    p, plan = every_type()
    doc = torchrec_document(p, plan)["plan"]
    assert doc["t_0"] == {"sharding_type": "table_wise", "compute_kernel": "fused", "ranks": [3],
                          "shard_sizes": [[1000, 16]], "shard_offsets": [[0, 0]]}
    assert doc["t_2"]["shard_sizes"] == [[125, 16]] * 8 and doc["t_2"]["shard_offsets"][-1] == [875, 0]
    assert doc["t_3"]["shard_sizes"] == [[1000, 8], [1000, 8]] and doc["t_3"]["shard_offsets"] == [[0, 0], [0, 8]]
    assert doc["t_4"]["ranks"] == [4, 5, 6, 7] and doc["t_4"]["shard_sizes"] == [[250, 16]] * 4
    assert doc["t_5"]["compute_kernel"] == "dense" and len(doc["t_5"]["ranks"]) == 8


def test_dims_torchrec_cannot_build_are_refused():
    p = problem(model(dim=94))
    with pytest.raises(ExportError, match="multiples of 4"):
        torchrec_document(p, ShardingPlan(tables=[TableSharding(table="t", sharding="row_wise")]))


def test_torchrec_plans_convert_to_ours_and_back():
    p, plan = every_type()
    doc = torchrec_document(p, plan)["plan"]
    back = plan_from_torchrec(p, doc)
    assert check_plan(back, p) == []
    # identical tables of a group are interchangeable: the same shardings, maybe on other table names
    shardings = lambda d: sorted(json.dumps(v, sort_keys=True) for v in d.values())  # noqa: E731
    assert shardings(torchrec_document(p, back)["plan"]) == shardings(doc)


@needs_torchrec
def test_both_renderings_read_back_with_torchrecs_types(tmp_path):
    p, plan = every_type()
    doc = torchrec_document(p, plan)
    result = readback(tmp_path, doc, torchrec_python(p, plan))
    assert result.get("ok") is True, json.dumps(result)[:2000]
    assert set(result["tables"]) == {f"t_{i}" for i in range(6)}


@needs_torchrec
def test_a_wrong_shard_is_caught_by_torchrec(tmp_path):
    p, plan = every_type()
    doc = torchrec_document(p, plan)
    doc["plan"]["t_2"]["shard_sizes"][0] = [126, 16]
    assert readback(tmp_path, doc).get("ok") is False


def test_export_cli_writes_both_renderings(tmp_path, capsys):
    task = ROOT / "problems" / "tasks" / "madmax-dlrm-a-zionex128.yaml"
    code = main(["export", "madmax-dlrm-a-mp128", "--task", str(task), "--to", "torchrec"])
    assert code == 4 and "multiples of 4" in capsys.readouterr().err
    code = main(["export", "gpt3-175b-megatron", "--task", "gpt3-175b-1024xa100", "--to", "torchrec"])
    assert code == 2
