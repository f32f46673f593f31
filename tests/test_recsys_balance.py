"""The rebalancing moves of the embedding-sharding search (solvers/recsys/balance.py): every
candidate place and exchange is priced exactly as the cost model prices the plan it makes, and the
moves never lengthen the step or overflow a rank."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.recsys_workloads import heterogeneous_problem  # noqa: E402
from planner.recsys.cost import evaluate  # noqa: E402
from planner.recsys.rules import greedy_plan  # noqa: E402
from solvers.recsys.balance import (  # noqa: E402
    _max_excluding, _owner_classes, _State, kicked, rebalance, retype, step_s, swap)
from solvers.recsys.model import build_choices, counts_of, plan_of  # noqa: E402


@pytest.fixture(scope="module")
def start():
    problem = heterogeneous_problem(40, 16, seed=3)
    choices = build_choices(problem)
    counts, dense_index = counts_of(choices, greedy_plan(problem))
    return problem, choices, counts, dense_index


def test_the_state_prices_a_plan_as_the_cost_model_does(start):
    problem, choices, counts, d = start
    assert step_s(choices, counts, d) == pytest.approx(evaluate(problem, plan_of(choices, counts, d)).step_time_s,
                                                       rel=1e-12)


def test_every_candidate_place_is_priced_as_the_plan_it_makes(start):
    problem, choices, counts, d = start
    for gi in range(len(choices.groups)):
        for members, owners, values in _owner_classes(choices, gi):
            placed = [m for m, index in enumerate(members) if counts[gi][index]]
            if not placed:
                continue
            position = placed[0]
            state = _State(choices, counts, d)
            state.apply(owners[position], values, -1)
            steps, _, _ = state.candidates(owners, values)
            for target in range(0, len(members), max(1, len(members) // 5)):
                moved = [list(row) for row in counts]
                moved[gi][members[position]] -= 1
                moved[gi][members[target]] += 1
                real = evaluate(problem, plan_of(choices, moved, d)).step_time_s
                assert steps[target] == pytest.approx(real, rel=1e-12), (gi, members[target])


def test_moves_and_exchanges_never_lengthen_the_step_nor_overflow_a_rank(start):
    problem, choices, counts, d = start
    before = evaluate(problem, plan_of(choices, counts, d)).step_time_s
    moved = rebalance(choices, counts, d, deadline=float("inf"))
    after_moves = evaluate(problem, plan_of(choices, moved, d))
    exchanged = swap(choices, moved, d, deadline=float("inf"))
    after_swaps = evaluate(problem, plan_of(choices, exchanged, d))
    assert after_moves.fits and after_swaps.fits
    assert after_swaps.step_time_s <= after_moves.step_time_s <= before
    assert after_swaps.step_time_s < before  # greedy's plan leaves room on this problem
    assert [sum(r) for r in exchanged] == [g.count for g in choices.groups]
    assert step_s(choices, exchanged, d) == pytest.approx(after_swaps.step_time_s, rel=1e-12)


def test_a_kick_keeps_every_table_and_moves_a_few(start):
    _, choices, counts, d = start
    out = kicked(choices, counts, random.Random(1))
    assert [sum(r) for r in out] == [sum(r) for r in counts]
    assert sum(abs(a - b) for ra, rb in zip(out, counts, strict=True) for a, b in zip(ra, rb, strict=True)) <= 2 * 2


@pytest.mark.parametrize("shape", [(7,), (7, 3), (2,), (2, 2)])
def test_the_largest_value_outside_two_ranks(shape):
    rng = np.random.default_rng(0)
    x = rng.random(shape)
    ranks = shape[0]
    for a in range(ranks):
        b = np.arange(ranks)
        got = _max_excluding(x, a, b)
        for c, bc in enumerate(b):
            keep = [r for r in range(ranks) if r not in (a, bc)]
            want = x[keep].max(axis=0) if keep else np.zeros(shape[1:])
            assert np.allclose(got[c], want)


def test_every_exchange_is_priced_as_the_plan_it_makes(start):
    problem, choices, counts, d = start
    table_wise = {}
    for gi in range(len(choices.groups)):
        for members, owners, values in _owner_classes(choices, gi):
            if owners.shape[1] == 1:
                table_wise[gi] = (members, {k: float(np.asarray(v)[0]) for k, v in values.items()})
    placed = [(gi, rank) for gi, (members, _) in table_wise.items() for rank, index in enumerate(members)
              if counts[gi][index]]
    state = _State(choices, counts, d)
    checked = 0
    for gi, a in placed[:4]:
        others = [(gj, r) for gj, r in placed if gj != gi and r != a]
        b = np.array([r for _, r in others])
        delta = {k: np.array([table_wise[gj][1][k] - table_wise[gi][1][k] for gj, _ in others])
                 for k in table_wise[gi][1]}
        steps, _, fits = state.exchanges(a, b, delta)
        for c, (gj, r) in enumerate(others):
            moved = [list(row) for row in counts]
            moved[gi][table_wise[gi][0][a]] -= 1
            moved[gi][table_wise[gi][0][r]] += 1
            moved[gj][table_wise[gj][0][r]] -= 1
            moved[gj][table_wise[gj][0][a]] += 1
            real = evaluate(problem, plan_of(choices, moved, d))
            assert steps[c] == pytest.approx(real.step_time_s, rel=1e-12), (gi, a, gj, r)
            assert bool(fits[c]) == real.fits
            checked += 1
    assert checked > 20


def test_moves_to_other_sharding_types_never_lengthen_the_step_nor_overflow_a_rank(start):
    problem, choices, counts, d = start
    before = evaluate(problem, plan_of(choices, counts, d))
    moved = retype(choices, counts, d, deadline=float("inf"))
    after = evaluate(problem, plan_of(choices, moved, d))
    assert after.fits and after.step_time_s < before.step_time_s  # greedy's all-table-wise plan leaves room
    assert [sum(r) for r in moved] == [g.count for g in choices.groups]
    assert step_s(choices, moved, d) == pytest.approx(after.step_time_s, rel=1e-12)
    kinds = {entry.sharding for entry in plan_of(choices, moved, d).tables}
    assert kinds != {"table_wise"}  # some tables changed type
