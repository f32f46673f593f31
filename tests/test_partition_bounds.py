"""The per-configuration bounds over stage partitions hold, and the incumbents built from them are
priced as the cost model prices them.

`pipeline_lower_bound` counts the pipeline part exactly and a lower bound on the data-parallel
communication the pipeline cannot hide: stages 0 and 1 as a pair (`edge_exposure`), and, given
an incumbent to beat, every stage's exposure against the most backward time the stages before
it can take (`exposure_refinement`). On small instances (every partition and recompute count
enumerated by solvers.exhaustive.best_partition) neither may exceed the best partition's step
time, whatever incumbent it is given.
"""

import math

import numpy as np
import pytest

from planner.llm.bounds import edge_exposure, pipeline_lower_bound
from planner.llm.cost.step import evaluate
from planner.llm.problem import load_cluster
from planner.llm.space import SpaceOptions, enumerate_candidates
from planner.llm.stage_tables import (
    improve_recompute,
    plan_with_partition,
    stage_model,
    step_time_s,
    step_times_s,
)
from planner.llm.task import Framework
from solvers.cpsat import partition_guess
from solvers.exhaustive import best_partition

from .conftest import make_problem, small_model

CASES = [
    # A network 50x slower than a DGX H100's, so that gradient reductions outlast the backward
    # passes that could hide them (where the refinement matters).
    dict(n=32, layers=12, hbm=4.0e9, attention="flash", overlap=True, slower=50.0, batch=32),
    dict(n=16, layers=8, hbm=4.0e9, attention="flash", overlap=False, slower=1.0, batch=32),
    dict(n=8, layers=9, hbm=2.5e9, attention="unfused", overlap=True, slower=1.0, batch=16),
]


def problem_of(case):
    base = load_cluster("dgx-h100", num_devices=case["n"])
    tiers = [t.model_copy(update={"bandwidth_bytes_per_s": t.bandwidth_bytes_per_s / case["slower"]})
             for t in base.tiers]
    cluster = base.model_copy(update={"device": base.device.model_copy(update={"hbm_bytes": case["hbm"]}),
                                      "tiers": tiers})
    model = small_model(num_layers=case["layers"], hidden_size=2048, ffn_hidden_size=5632, vocab_size=50000)
    return make_problem(num_devices=case["n"], model=model, global_batch_size=case["batch"], seq_len=1024,
                        cluster=cluster,
                        framework=Framework(attention=case["attention"], overlap_grad_reduce=case["overlap"],
                                            framework_overhead_bytes=0.1 * 2**30))


def configurations(problem, count, seed):
    candidates = enumerate_candidates(problem, options=SpaceOptions(max_virtual_stages=2, max_micro_batch_size=2,
                                                                    axis_orders="megatron"))
    piped = np.flatnonzero(candidates.pp >= 2)
    chosen = np.random.default_rng(seed).choice(piped, size=min(count, len(piped)), replace=False)
    return [candidates.plan(int(i)) for i in chosen]


@pytest.mark.parametrize("case", CASES, ids=["slow-network", "exposed-dp", "overlapped-dp"])
def test_partition_bounds_never_exceed_the_best_partition(case):
    problem = problem_of(case)
    checked = sharper = 0
    for config in configurations(problem, 60, seed=11):
        best = best_partition(problem, config)
        if best is None:
            continue
        sm = stage_model(problem, config)
        plain = pipeline_lower_bound(sm)[0]  # no incumbent: the pair bound alone
        assert plain <= best[0] * (1 + 1e-9), config.summary()
        for upper in (best[0] * 1.02, best[0] * 1.5, best[0] * 0.95):
            bound = pipeline_lower_bound(sm, upper)[0]
            assert bound <= best[0] * (1 + 1e-9), (config.summary(), upper / best[0], bound, best[0])
        sharper += pipeline_lower_bound(sm, best[0] * 1.5)[0] > plain * (1 + 1e-9)
        checked += 1
    assert checked >= 15
    if case["slower"] > 1:
        assert sharper > 0, "the exposure refinement never sharpened the bound: the test checks nothing"


def test_edge_exposure_is_at_most_what_the_tables_price_as_exposed():
    """For any partition (recompute counts 0), the pair bound at its first two stages' units is
    at most the exposed data-parallel seconds of the tables' step (the step less its pipeline
    part, optimizer step and embedding sync)."""
    problem = problem_of(CASES[0])
    rng = np.random.default_rng(8)
    checked = positive = 0
    for config in configurations(problem, 40, seed=3):
        sm = stage_model(problem, config)
        for _ in range(5):
            cuts = np.sort(rng.choice(np.arange(1, sm.chunks), size=sm.num_stages - 1, replace=False))
            units = list(np.diff(np.concatenate([[0], cuts, [sm.chunks]])).astype(int))
            zeros = [0] * sm.num_stages
            total, _ = step_time_s(sm, units, zeros)
            t = [st.forward_s[u] + st.backward_s[u] for st, u in zip(sm.stages, units, strict=True)]
            pipeline = sm.num_micro_batches * max(t) + (sum(t) - max(t)) / sm.virtual_stages
            optimizer = max(st.optimizer_s[u] for st, u in zip(sm.stages, units, strict=True))
            exposed = total - pipeline - optimizer - sm.embedding_sync_s
            bound = edge_exposure(sm, 2)[units[0], units[1]]
            assert bound <= exposed + 1e-12 * max(1.0, total), (config.summary(), units, bound, exposed)
            positive += bound > 0
            checked += 1
    assert checked > 50 and positive > 0


def test_the_vectorized_step_time_equals_the_tables_and_improving_recompute_never_hurts():
    problem = problem_of(CASES[0])
    for config in configurations(problem, 40, seed=5):
        best = best_partition(problem, config)
        if best is None:
            continue
        sm = stage_model(problem, config)
        if not sm.recompute_full:
            continue
        units = [n // sm.unit_layers for n in best[1].layers_per_stage(problem.model.num_layers)]
        rows = np.array([[min(r, sm.recomputable(i, u)) for i, u in enumerate(units)] for r in range(3)])
        batch = step_times_s(sm, units, rows)
        for row, value in zip(rows, batch, strict=True):
            total, peak = step_time_s(sm, units, list(row))
            expected = total if peak <= sm.capacity_bytes else math.inf
            assert value == pytest.approx(expected, rel=1e-12) or value == expected == math.inf
        guess = partition_guess(sm, units)
        if guess is None:
            continue
        assert guess[0] >= best[0] * (1 - 1e-9)  # no guess beats the exhaustive optimum
        plan = plan_with_partition(sm, guess[1], guess[2])
        assert evaluate(problem, plan).step_time_s == pytest.approx(guess[0], rel=1e-9)
        start = [0] * len(units)
        if step_times_s(sm, units, np.array([start]))[0] < math.inf:
            value, counts = improve_recompute(sm, units, start)
            assert value <= step_times_s(sm, units, np.array([start]))[0]
            assert value == pytest.approx(step_times_s(sm, units, np.array([counts]))[0], rel=1e-12)


def test_the_two_pass_bounds_equal_the_one_pass_bounds_and_never_exceed_the_best_partition():
    """screened_lower_bound_within: pass 1 screens every configuration, `improve` may lower the
    incumbent, pass 2 bounds fully where the screen is below it. With the same incumbent it
    gives the one-pass bounds; with a lower one it stays valid."""
    from planner.llm.bounds import screened_lower_bound_within, time_lower_bound_within

    problem = problem_of(CASES[1])
    candidates = enumerate_candidates(problem, options=SpaceOptions(max_virtual_stages=2, max_micro_batch_size=2,
                                                                    axis_orders="megatron"))
    sample = candidates.take(np.random.default_rng(2).choice(len(candidates), size=60, replace=False))
    best = [best_partition(problem, sample.plan(i)) for i in range(len(sample))]
    optimum = min(b[0] for b in best if b is not None)
    upper = 1.5 * optimum
    one, _ = time_lower_bound_within(problem, sample, upper, chunk=7)
    two, done = screened_lower_bound_within(problem, sample, upper, chunk=7)
    assert done == len(sample)
    assert np.allclose(np.minimum(one, upper * 2), np.minimum(two, upper * 2), rtol=1e-12)
    seen = []
    lowered, _ = screened_lower_bound_within(problem, sample, upper, improve=lambda s: seen.append(s) or optimum,
                                             chunk=7)
    assert len(seen) == 1 and seen[0].shape == (len(sample),)
    for b, bound in zip(best, lowered, strict=True):
        if b is not None:
            assert bound <= b[0] * (1 + 1e-9)
