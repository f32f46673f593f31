"""Bulk pricing runs the same cost model as `evaluate`: the two must agree on every plan."""

import numpy as np
import pytest

from planner.llm.candidates import AXIS_ORDERS, CandidateSet, price
from planner.llm.cost.step import evaluate
from planner.llm.problem import load_problem
from planner.llm.space import check_candidates, enumerate_candidates
from planner.llm.task import Framework

from .conftest import PROBLEMS, make_problem


@pytest.mark.parametrize("attention", ["flash", "unfused"])
def test_bulk_price_equals_evaluate(attention):
    problem = make_problem(num_devices=16, framework=Framework(attention=attention))
    candidates = enumerate_candidates(problem, axis_orders=list(range(len(AXIS_ORDERS))))
    assert len(candidates) > 1000
    priced = price(problem, candidates)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(candidates), size=150, replace=False):
        plan = candidates.plan(int(i))
        b = evaluate(problem, plan)
        assert priced.step_s[i] == pytest.approx(b.step_time_s, rel=1e-9), plan.summary()
        assert priced.peak_memory_bytes[i] == pytest.approx(b.peak_memory_bytes, rel=1e-9), plan.summary()


def test_enumerated_candidates_are_valid_plans():
    problem = load_problem(PROBLEMS / "tasks" / "llama3-70b-64xh100.yaml")
    candidates = enumerate_candidates(problem)
    assert len(candidates) > 100
    assert check_candidates(problem, candidates) == []


def test_from_plans_round_trip():
    problem = make_problem(num_devices=16)
    candidates = enumerate_candidates(problem).take(slice(0, 20))
    again = CandidateSet.from_plans([candidates.plan(i) for i in range(len(candidates))])
    for name in ("tp", "cp", "pp", "dp", "virtual_stages", "micro_batch_size", "zero_stage", "recompute"):
        assert np.array_equal(getattr(again, name), getattr(candidates, name))
