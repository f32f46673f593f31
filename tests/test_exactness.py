"""Exactness, on 200 random small instances (Hypothesis, derandomized for reproducible CI):

- CP-SAT's optimum equals the exhaustive oracle's (up to the stated rounding bound);
- both agree on infeasibility;
- the cost model's re-evaluation of CP-SAT's plan equals its objective within the rounding bound;
- no heuristic beats the optimum.
Instances: up to 64 GPUs and 16 layers, small memories so that pipeline, tensor parallelism,
ZeRO and per-stage recompute matter.
"""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from planner.llm.cost.step import evaluate
from planner.llm.problem import Problem, load_cluster
from planner.llm.space import SpaceOptions
from planner.llm.task import Constraints, Framework, TrainingTask
from solvers import SOLVERS, SolveOptions

from .conftest import small_model

MAX_PARTITIONS = 150_000


@st.composite
def instances(draw):
    n = draw(st.sampled_from([1, 2, 4, 8, 8, 16, 32, 64]))
    heads = draw(st.sampled_from([8, 16]))
    hidden = draw(st.sampled_from([1024, 2048]))
    model = small_model(
        num_layers=draw(st.integers(2, 16)),
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=draw(st.sampled_from([1, 2, heads])),
        ffn_hidden_size=3 * hidden,
        vocab_size=draw(st.sampled_from([8000, 50000])),
        tied_embeddings=draw(st.booleans()),
    )
    base = load_cluster("dgx-h100", num_devices=n)
    node = draw(st.sampled_from([4, 8]))
    cluster = base.model_copy(update={
        "device": base.device.model_copy(update={"hbm_bytes": draw(st.sampled_from([1.0, 1.5, 2.0, 4.0])) * 1e9}),
        "tiers": [base.tiers[0].model_copy(update={"size": node}), base.tiers[1]],
    })
    task = TrainingTask(
        global_batch_size=n * draw(st.sampled_from([1, 2, 4])),
        seq_len=draw(st.sampled_from([512, 1024])),
        framework=Framework(
            attention=draw(st.sampled_from(["flash", "unfused"])),
            framework_overhead_bytes=0.1 * 2**30,
            overlap_grad_reduce=draw(st.booleans()),
        ),
        constraints=Constraints(
            recompute=draw(st.sampled_from([["none", "selective", "full"], ["full"], ["none"], ["selective", "full"]])),
            zero_stages=draw(st.sampled_from([[0, 1, 2, 3], [0, 1], [3]])),
        ),
    )
    space = SpaceOptions(max_virtual_stages=2, max_micro_batch_size=2,
                         axis_orders=draw(st.sampled_from(["megatron", "tp-inner"])))
    return Problem(model=model, cluster=cluster, task=task), SolveOptions(space=space, max_evaluations=MAX_PARTITIONS)


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(instance=instances())
def test_cpsat_equals_exhaustive_and_heuristics_are_no_better(instance):
    problem, options = instance
    oracle = SOLVERS["exhaustive"].solve(problem, options)
    assume(oracle.status != "UNKNOWN")
    exact = SOLVERS["cpsat"].solve(problem, options)
    if oracle.status == "INFEASIBLE":
        assert exact.status == "INFEASIBLE"
        assert exact.infeasibility
        return
    assert exact.status == "OPTIMAL"
    rounding = exact.stats.get("rounding_bound_s", 0.0) + 1e-12
    priced = evaluate(problem, exact.plan)
    assert priced.fits
    assert abs(priced.step_time_s - exact.objective_s) <= rounding
    assert abs(exact.objective_s - oracle.objective_s) <= rounding
    assert oracle.objective_s <= priced.step_time_s * (1 + 1e-12)
    assert exact.gap == 0.0
    for name in ("megatron-rules", "fsdp-only", "greedy"):
        result = SOLVERS[name].solve(problem, options)
        if result.plan is not None and result.breakdown.fits:
            assert result.objective_s >= oracle.objective_s * (1 - 1e-12), name
