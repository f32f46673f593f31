"""Large integers: divisors by factorization, huge device counts and batches, and CP-SAT's int64.

The schemas cap num_devices at 2^24 and batches and sequence lengths at 2^40 tokens; under those
caps the solvers neither scan up to a number nor overflow CP-SAT's 64-bit domains: when a round's
step time in 1 ns units would overflow, the time unit is coarsened and the rounding bound grows
with it -- still reported, and honest (the status says OPTIMAL only at the finest unit).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.core.factorize import divisors, factorize
from planner.llm.candidates import CandidateSet, price_balanced
from planner.llm.cost.step import evaluate
from planner.llm.problem import load_model, load_problem
from planner.llm.space import SpaceOptions, enumerate_candidates, enumerate_within
from solvers import SOLVERS, SolveOptions
from solvers.cpsat import distinct_recompute_modes, dominance_filter
from solvers.cpsat_model import UNIT_S, build_model
from solvers.heuristics import balanced_layers

from .conftest import PROBLEMS, make_problem, small_model


@settings(max_examples=300, deadline=None, derandomize=True)
@given(n=st.integers(1, 20_000), limit=st.one_of(st.none(), st.integers(1, 64)))
def test_divisors_equal_trial_division(n, limit):
    expected = [d for d in range(1, n + 1) if n % d == 0 and (limit is None or d <= limit)]
    assert divisors(n, limit) == expected


@pytest.mark.parametrize(("n", "count"), [
    (10**8, 81), (2**40, 41), (2**24, 25), (2**40 - 87, 2), (2**61 - 1, 2),
    ((2**31 - 1) * (2**31 - 19), 4), (2**20 * 3**10 * 5**5 * 7**3, 21 * 11 * 6 * 4),
])
def test_divisors_of_large_numbers(n, count):
    start = time.perf_counter()
    found = divisors(n)
    assert time.perf_counter() - start < 1.0
    assert len(found) == count and found[0] == 1 and found[-1] == n
    assert all(n % d == 0 for d in found)
    assert math.prod(p**e for p, e in factorize(n)) == n


def test_dropping_duplicate_recompute_modes_in_the_enumeration_equals_filtering_after():
    problem = load_problem(PROBLEMS / "tasks" / "llama3-70b-64xh100.yaml")
    space = SpaceOptions()
    everything = enumerate_candidates(problem, options=space)
    filtered = everything.take(np.flatnonzero(dominance_filter(problem, everything)))
    direct, complete = enumerate_within(problem, options=space, recompute=distinct_recompute_modes(problem))
    assert complete
    for name in ("tp", "cp", "pp", "dp", "virtual_stages", "micro_batch_size", "sp", "tp_comm_overlap",
                 "zero_stage", "recompute", "axis_order", "shard_size"):
        assert np.array_equal(getattr(direct, name), getattr(filtered, name)), name


@pytest.mark.parametrize("task", ["llama3-405b-16384xh100", "gpt3-175b-1024xa100"])
def test_bulk_balanced_pricing_equals_evaluate(task):
    """The heuristics price neighbours in bulk at the balanced split; it must equal evaluate."""
    problem = load_problem(PROBLEMS / "tasks" / f"{task}.yaml")
    candidates = enumerate_candidates(problem, options=SpaceOptions())
    sample = candidates.take(np.random.default_rng(0).choice(len(candidates), size=120, replace=False))
    priced = price_balanced(problem, sample)
    for j in range(len(sample)):
        plan = sample.plan(j)
        layers = balanced_layers(problem.model.num_layers, plan.pp, plan.virtual_stages)
        b = evaluate(problem, plan.model_copy(update={"stage_layers": layers}))
        assert priced.step_s[j] == pytest.approx(b.step_time_s, rel=1e-9), plan.summary()
        assert priced.peak_memory_bytes[j] == pytest.approx(b.peak_memory_bytes, rel=1e-9), plan.summary()
    again = CandidateSet.from_plans([sample.plan(j) for j in range(5)])
    assert np.allclose(price_balanced(problem, again).step_s, priced.step_s[:5], rtol=1e-12)


def trillion_micro_batches():
    return make_problem(num_devices=8, model=load_model("llama3-8b"), global_batch_size=2**40 - 87, seq_len=1)


def test_a_trillion_micro_batches_coarsens_the_unit_and_says_so():
    # 2^40 - 87 (prime) one-token sequences on 8 GPUs: DP 1, about 1.1e12 micro-batches; in 1 ns
    # units the step time (~3e9 s) times 12 overflows int64.
    problem = trillion_micro_batches()
    start = time.perf_counter()
    result = SOLVERS["cpsat"].solve(problem, SolveOptions(time_limit_s=10))
    assert time.perf_counter() - start < 12
    assert result.plan is not None and result.status in ("FEASIBLE", "OPTIMAL")
    assert result.stats["time_unit_s"] > UNIT_S
    assert result.status == "FEASIBLE"  # optimal only up to the (now large) rounding bound
    rounding = result.stats["rounding_bound_s"]
    priced = evaluate(problem, result.plan)
    assert priced.fits
    assert abs(priced.step_time_s - result.objective_s) <= rounding
    assert result.best_bound_s <= result.objective_s - rounding * (1 - 1e-9)
    assert any("rounding bound" in note for note in result.notes)


def test_coarse_units_keep_every_row_within_int64():
    problem = trillion_micro_batches()
    from planner.llm.stage_tables import stage_model

    candidates = enumerate_candidates(problem, options=SpaceOptions())
    models = [stage_model(problem, candidates.plan(i)) for i in range(min(10, len(candidates)))]
    built = build_model(models, [0.0] * len(models), None)
    assert built.unit_s > UNIT_S
    assert built.model.validate() == ""
    assert built.horizon * (len(models) + 2) < 2**63


def test_16m_gpus_and_a_2_40_token_batch_return_a_plan_in_time():
    base = load_problem(PROBLEMS / "tasks" / "llama3-405b-16384xh100.yaml")
    cluster = base.cluster.model_copy(update={"num_devices": 2**24})
    task = base.task.model_copy(update={"global_batch_tokens": 2**40})
    problem = type(base)(model=base.model, cluster=cluster, task=task, source="huge")
    start = time.perf_counter()
    result = SOLVERS["cpsat"].solve(problem, SolveOptions(time_limit_s=2))
    assert time.perf_counter() - start < 2 + 1.5
    assert result.plan is not None and result.best_bound_s is not None
    assert evaluate(problem, result.plan).fits


def test_configurations_too_large_for_a_round_stay_open_in_the_bound():
    """65,536 layers: CP-SAT's presolve of such tables ignores time limits, so these
    configurations are not put in a round; their lower bounds stay in the reported bound. (At
    most 4 virtual stages: with one layer per chunk allowed, the best plans have short tables.)"""
    model = small_model(num_layers=2**16, hidden_size=256, num_heads=4, num_kv_heads=4, ffn_hidden_size=512,
                        vocab_size=1000)
    problem = make_problem(num_devices=64, model=model, global_batch_size=64, seq_len=256)
    start = time.perf_counter()
    result = SOLVERS["cpsat"].solve(problem, SolveOptions(time_limit_s=5, space=SpaceOptions(max_virtual_stages=4)))
    assert time.perf_counter() - start < 5 + 1.5
    assert result.stats["too_large_for_a_round"] > 0
    assert result.status == "FEASIBLE"
    assert 0 < result.best_bound_s < result.objective_s
    assert evaluate(problem, result.plan).fits


@pytest.mark.parametrize("name", ["cpsat", "exhaustive"])
def test_a_sequence_longer_than_the_model_takes_is_infeasible(name):
    model = load_model("llama3-8b")
    problem = make_problem(num_devices=8, model=model, global_batch_size=8, seq_len=2 * model.max_seq_len)
    result = SOLVERS[name].solve(problem, SolveOptions(time_limit_s=5))
    assert result.status == "INFEASIBLE"
    assert "max_seq_len" in result.infeasibility
