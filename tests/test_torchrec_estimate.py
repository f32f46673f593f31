"""TorchRec's own estimator on a given plan (planner/frameworks/torchrec_plan.py estimate, and
solvers.recsys.torchrec_baseline.torchrec_estimates for our plans).

TorchRec's plan priced through the estimate mode gives back the estimate its planner returned for
it (a self-consistency check of the placement: same per-rank perf, storage and score); our plans
(every sharding type; the exact search's plan on a small task) get a finite estimate with the
sharding types and ranks they were given; `planner compare` with torchrec beside another solver
prints both plans under TorchRec's estimate.

Needs .venv-torchrec (built by .ci/run; or PLANNER_TORCHREC_PYTHON); without it these tests skip,
except the one that checks the answer when it is missing.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess

import pytest

from planner.cli import main
from planner.recsys.plan import ShardingPlan, TableSharding
from solvers import SolveOptions
from solvers.recsys import solve_recsys
from solvers.recsys.torchrec_baseline import add_torchrec_estimates, torchrec_entries, torchrec_estimates

from .test_recsys_cost import model, problem
from .test_torchrec_export import every_type
from .test_torchrec_frameworks import PLAN_INPUT, PYTHON, SCRIPT

needs_torchrec = pytest.mark.skipif(not PYTHON.exists(), reason=f"TorchRec environment not installed ({PYTHON})")
ESTIMATE_KEYS = ("per_rank_perf_ms", "per_rank_hbm_bytes", "per_rank_ddr_bytes", "max_rank_perf_ms", "tables",
                 "per_rank_parts_ms", "hbm_bytes_per_rank_after_reservation", "fits")


def run(command: str, spec: dict, tmp_path) -> tuple[dict, int]:
    path = tmp_path / f"{command}-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run([str(PYTHON), str(SCRIPT), command, str(path)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.stdout.strip(), done.stderr[-3000:]
    return json.loads(done.stdout), done.returncode


def assert_same_estimate(got: dict, want: dict) -> None:
    for key in ESTIMATE_KEYS:
        assert key in got and key in want, key
    assert got["per_rank_hbm_bytes"] == want["per_rank_hbm_bytes"]
    assert got["per_rank_ddr_bytes"] == want["per_rank_ddr_bytes"]
    assert got["per_rank_perf_ms"] == pytest.approx(want["per_rank_perf_ms"], rel=1e-12)
    assert got["max_rank_perf_ms"] == pytest.approx(want["max_rank_perf_ms"], rel=1e-12)
    assert list(got["tables"]) == list(want["tables"])
    for name, row in want["tables"].items():
        assert got["tables"][name] == pytest.approx(row, rel=1e-12), name
    for part, values in want["per_rank_parts_ms"].items():
        assert got["per_rank_parts_ms"][part] == pytest.approx(values, rel=1e-12), part
    assert got["fits"] == want["fits"]


@needs_torchrec
def test_torchrecs_plan_priced_again_gives_back_its_planners_estimate(tmp_path):
    planned, rc = run("plan", PLAN_INPUT, tmp_path)
    assert rc == 0, planned
    est = planned["estimate"]
    assert est["fits"] is True  # the partitioner placed it under the reserved capacity
    assert est["max_rank_perf_ms"] == max(est["per_rank_perf_ms"]) > 0
    assert sum(est["per_rank_parts_ms"]["fwd_compute_ms"]) == pytest.approx(
        sum(row["fwd_compute_ms"] for row in est["tables"].values()))

    spec = {k: v for k, v in PLAN_INPUT.items() if k not in ("sharding_types", "compute_kernels", "timeout_s")}
    priced, rc = run("estimate", {**spec, "plan": planned["plan"]}, tmp_path)
    assert rc == 0, priced
    assert priced["plan"] == planned["plan"]  # the same shards on the same ranks
    assert "notes" not in priced  # TorchRec's enumerator made exactly these shards
    assert_same_estimate(priced["estimate"], est)

    # Several plans in one run, by label: the same answer, and a bad one does not spoil the others.
    broken = copy.deepcopy(planned["plan"])
    name = next(iter(broken))
    broken[name]["ranks"] = broken[name]["ranks"] + [0]
    many, rc = run("estimate", {**spec, "plans": {"torchrec": planned["plan"], "broken": broken}}, tmp_path)
    assert rc == 0, many
    assert_same_estimate(many["estimates"]["torchrec"]["estimate"], est)
    assert "ranks" in many["estimates"]["broken"]["error"] and name in many["estimates"]["broken"]["error"]

    # One plan alone that TorchRec cannot price is an error line with exit status 1.
    out, rc = run("estimate", {**spec, "plan": broken}, tmp_path)
    assert rc == 1 and name in out["error"]


@needs_torchrec
def test_our_plans_get_torchrecs_estimate_with_the_types_and_ranks_given():
    p, plan = every_type()
    p_small = problem(model(count=3, num_rows=5000, dim=32, pooling_factor=4))
    (ours,) = solve_recsys(p_small, ["cpsat"], SolveOptions(time_limit_s=10))
    assert ours.plan is not None
    for prob, label, given in ((p, "every type", plan), (p_small, "cpsat", ours.plan)):
        (item,) = torchrec_estimates(prob, {label: given}).values()
        assert "error" not in item, item
        est, placed = item["estimate"], item["plan"]
        assert math.isfinite(est["max_rank_perf_ms"]) and est["max_rank_perf_ms"] > 0
        assert est["max_rank_perf_ms"] == pytest.approx(max(est["per_rank_perf_ms"]))
        assert len(est["per_rank_perf_ms"]) == prob.cluster.num_devices
        assert est["fits"] is True
        assert all(row["total_ms"] > 0 and row["hbm_bytes"] > 0 for row in est["tables"].values())
        entries = torchrec_entries(prob, given)
        assert set(placed) == set(entries)
        for name, entry in entries.items():
            assert placed[name]["sharding_type"] == entry["sharding_type"], name
            assert placed[name]["ranks"] == entry["ranks"], name
            assert placed[name]["shard_sizes"] == entry["shard_sizes"], name
            assert placed[name]["compute_kernel"] == entry["compute_kernel"], name
        assert "notes" not in item
    types = {e["sharding_type"] for e in torchrec_entries(p, plan).values()}
    assert types == {"table_wise", "row_wise", "column_wise", "table_row_wise", "data_parallel"}


@needs_torchrec
def test_shards_torchrec_would_not_make_are_priced_as_given(tmp_path):
    spec = {k: v for k, v in PLAN_INPUT.items() if k not in ("sharding_types", "compute_kernels", "timeout_s")}
    plan = {t["name"]: {"sharding_type": "table_wise", "compute_kernel": "fused", "ranks": [i % 4],
                        "shard_sizes": [[t["num_rows"], t["dim"]]], "shard_offsets": [[0, 0]]}
            for i, t in enumerate(PLAN_INPUT["tables"])}
    # history (dim 256) in three uneven column shards: TorchRec's enumerator makes two of 128.
    plan["history"] = {"sharding_type": "column_wise", "compute_kernel": "fused", "ranks": [1, 2, 3],
                       "shard_sizes": [[600_000, 128], [600_000, 64], [600_000, 64]],
                       "shard_offsets": [[0, 0], [0, 128], [0, 192]]}
    out, rc = run("estimate", {**spec, "plan": plan}, tmp_path)
    assert rc == 0, out
    assert out["plan"] == plan
    assert "history" in out["notes"][0] and "would not make" in out["notes"][0]
    row = out["estimate"]["tables"]["history"]
    assert row["total_ms"] > 0 and row["hbm_bytes"] > 0
    # Our column shards of a width TorchRec's kernels refuse (6 columns) keep their width when priced.
    p = problem(model(count=1, num_rows=1000, dim=24))
    entries = torchrec_entries(p, ShardingPlan(tables=[TableSharding(table="t", sharding="column_wise",
                                                                     ranks=[0, 1, 2, 3])]))
    (entry,) = entries.values()
    assert entry["shard_sizes"] == [[1000, 6]] * 4 and entry["shard_offsets"][-1] == [0, 18]


@needs_torchrec
def test_compare_prints_every_plan_under_torchrecs_estimate(capsys):
    code = main(["compare", "mlperf-dlrm-dcnv2-8xh100", "--solvers", "greedy,torchrec", "--time-limit", "60"])
    out = capsys.readouterr().out
    assert code == 0, out
    line = next(x for x in out.splitlines() if x.startswith("torchrec: under TorchRec's own estimate"))
    assert "torchrec " in line and "greedy " in line and " ms" in line


def test_without_torchrec_every_plan_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("PLANNER_TORCHREC_PYTHON", str(tmp_path / "nowhere" / "python"))
    p, plan = every_type()
    out = torchrec_estimates(p, {"a": plan, "b": plan})
    assert set(out) == {"a", "b"} and all("not installed" in v["error"] for v in out.values())
    # No TorchRec plan: nothing is added to the other results.
    from solvers.base import SolveResult

    results = {"greedy": SolveResult("greedy", "HEURISTIC", plan=plan), "torchrec": SolveResult("torchrec", "UNKNOWN")}
    add_torchrec_estimates(p, results)
    assert results["greedy"].stats == {} and results["torchrec"].notes == []


def test_with_the_time_limit_used_up_the_other_plans_are_not_sent_to_torchrec(monkeypatch):
    from solvers.base import SolveResult
    from solvers.recsys import torchrec_baseline

    from planner.cli.common import load_task

    problem = load_task("mlperf-dlrm-dcnv2-8xh100")
    (ours,) = solve_recsys(problem, ["greedy"], SolveOptions(time_limit_s=10))
    own = SolveResult("torchrec", "HEURISTIC", plan=ours.plan, stats={"torchrec_max_rank_perf_ms": 2.0})
    monkeypatch.setattr(torchrec_baseline, "torchrec_estimates", lambda *a, **k: pytest.fail("must not run"))
    torchrec_baseline.add_torchrec_estimates(problem, {"torchrec": own, "greedy": ours}, deadline=0.0)
    assert "the time limit was used up" in own.notes[-1]
    assert "torchrec_estimate_ms" not in ours.stats
