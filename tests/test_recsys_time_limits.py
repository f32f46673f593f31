"""Embedding sharding under honest time limits and at sizes where the full option arrays would not
fit in memory: the solvers stop at the deadline with what they have, say so, and never claim a
bound they did not prove; table-row-wise options priced on demand equal those priced up front."""

from __future__ import annotations

import numpy as np

from planner.core.hardware import Cluster, NetworkTier
from planner.core.inputs import load_device
from planner.recsys.cost import evaluate
from planner.recsys.model import Dlrm
from planner.recsys.problem import RecsysProblem
from planner.recsys.task import RecsysTraining
from solvers.base import SolveOptions
from solvers.recsys import solve_recsys
from solvers.recsys import model as choices_module
from solvers.recsys.bound import place, relax
from solvers.recsys.exhaustive import RecsysExhaustive
from solvers.recsys.model import build_choices


def problem(num_tables: int = 6, per_host: int = 4, hosts: int = 2, count: int = 1, rows: int = 10**5) -> RecsysProblem:
    tables = [{"name": f"t{i}", "count": count, "num_rows": rows * (i + 1), "dim": 32 * (1 + i % 3),
               "pooling_factor": 1 + 7 * (i % 4)} for i in range(num_tables)]
    model = Dlrm(name="limits", num_dense_features=13, bottom_mlp=[64, 32], interaction={"type": "concat"},
                 top_mlp=[64, 1], tables=tables)
    tiers = [NetworkTier(name="nvlink", size=per_host, bandwidth_bytes_per_s=300e9, latency_s=5e-6, efficiency=0.8),
             NetworkTier(name="ib", bandwidth_bytes_per_s=25e9, latency_s=20e-6, efficiency=0.9)]
    cluster = Cluster(name="c", device=load_device("a100-sxm4-40gb"), num_devices=per_host * hosts, tiers=tiers)
    return RecsysProblem(model=model, cluster=cluster, task=RecsysTraining(global_batch_size=per_host * hosts * 1024))


def test_a_search_out_of_time_before_it_starts_returns_the_best_rule_plan_without_a_bound():
    p = problem()
    (result,) = solve_recsys(p, ["cpsat"], SolveOptions(time_limit_s=1e-6, workers=1))
    assert result.status == "FEASIBLE"
    assert result.best_bound_s is None and result.plan.provenance.gap is None
    assert any("time limit passed" in note for note in result.notes)
    assert evaluate(p, result.plan).step_time_s == result.objective_s


def test_the_oracle_names_a_space_too_large_without_writing_out_its_size():
    p = problem(num_tables=1, count=10**6, rows=10)  # C(10^6 + k - 1, k - 1) plans: thousands of digits
    result = RecsysExhaustive().solve(p, SolveOptions(time_limit_s=5, max_evaluations=1000))
    assert result.status == "UNKNOWN"
    assert result.notes == ["more than 1,000 plans (the most the oracle evaluates)"]


def test_the_oracle_out_of_time_proves_nothing():
    result = RecsysExhaustive().solve(problem(num_tables=3), SolveOptions(time_limit_s=1e-6, max_evaluations=10**9))
    assert result.status == "UNKNOWN" and result.plan is None
    assert "out of time" in result.notes[0]


def test_table_row_wise_options_priced_on_demand_equal_those_priced_up_front(monkeypatch):
    p = problem()
    eager = build_choices(p)
    monkeypatch.setattr(choices_module, "EAGER_TABLE_ROW_WISE_ELEMENTS", 0)
    lazy = build_choices(p)
    lazy_twrw = 0
    for g_eager, g_lazy in zip(eager.groups, lazy.groups, strict=True):
        for index, option in enumerate(g_eager.options):
            if option.sharding == "table_row_wise":
                assert g_lazy.priced[index] is None
                lazy_twrw += 1
            a, b = g_eager.loads(index), g_lazy.loads(index)
            for name in a.ARRAYS:
                assert np.array_equal(getattr(a, name), getattr(b, name)), (option, name)
    assert lazy_twrw == 6 * 2  # one per host and table
    # The placement of a relaxed solution works on either form and gives a plan that fits.
    _, relaxed = relax(lazy, 5.0, workers=1)
    counts, dense_index = place(lazy, relaxed)
    assert [sum(row) for row in counts] == [g.count for g in lazy.groups]


def test_placing_stops_at_its_deadline():
    choices = build_choices(problem(num_tables=2, count=2000))
    _, relaxed = relax(choices, 5.0, workers=1)
    assert place(choices, relaxed, deadline=0.0) is None
    assert place(choices, relaxed) is not None
