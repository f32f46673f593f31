"""Communication beside compute: an overlapped collective's kernels hold SMs the compute lacks
(planner.core.kernels COMM_SM_FRACTION; for Transformer Engine's userbuffers TP overlap, its
SM-driven reduce-scatter side, UB_COMM_SM_FRACTION). Each term by hand, and the solver's bounds."""

from __future__ import annotations

import pytest

from planner.core import kernels
from planner.llm.cost.layer import layer_cost
from planner.llm.cost.layout import PlanVars
from planner.llm.cost.step import data_parallel_raw, evaluate, plan_stage_specs
from planner.llm.plan import Plan
from planner.llm.problem import Problem

from .conftest import make_problem, small_model, with_bandwidth

F = kernels.COMM_SM_FRACTION


def test_the_shares_are_the_cited_sm_counts():
    """24 of an H100's 132 SMs (NCCL's CTAs, DeepEP's kernels); TE userbuffers' num_sm 16."""
    assert F == pytest.approx(24 / 132)
    assert kernels.UB_COMM_SM_FRACTION == pytest.approx(16 / 132)


@pytest.mark.parametrize(("comm", "compute", "exposed"), [
    (1.0, 10.0, 24 / 132),      # hidden: only the SMs the collective holds
    (10.0, 1.0, 9.0),           # longer than the compute: the excess, as before
    (0.5, 0.4, 0.1),            # the excess (0.1) beats the SM share (0.0909)
    (0.5, 0.45, 0.5 * 24 / 132),
    (0.0, 3.0, 0.0),
])
def test_contended_exposure_by_hand(comm, compute, exposed):
    assert float(kernels.contended_exposed_s(comm, compute)) == pytest.approx(exposed, rel=1e-12)


def test_the_data_parallel_floor_adds_the_share_of_the_overlapped_buckets():
    """Megatron's distributed optimizer with overlap: the never-hidden part of the gradient
    reduce-scatter is its last bucket plus f of the others; without overlap, all of it."""
    problem = make_problem(num_devices=16)
    plan = Plan(tp=1, pp=1, dp=16, zero_stage=1, micro_batch_size=1)
    spec = plan_stage_specs(plan, problem)[0]
    raw = data_parallel_raw(problem, PlanVars.from_plan(plan), spec)
    fw = problem.task.framework
    assert fw.overlap_grad_reduce and fw.overlap_param_gather
    params = float(raw.param_s)  # the all-gather of bf16 weights: a share of the bytes, below
    grad_bytes = 4.0 if fw.grad_dtype == "fp32" else 2.0
    from planner.llm.cost.memory import stage_params

    total = float(stage_params(problem, PlanVars.from_plan(plan), spec.layers, True, True, spec.moe_layers))
    last = float(raw.grad_s) * min(1.0, fw.grad_bucket_bytes / (total * grad_bytes))
    first = params * min(1.0, fw.grad_bucket_bytes / (total * 2.0))
    assert float(raw.grad_floor_s) == pytest.approx(last + F * (float(raw.grad_s) - last), rel=1e-12)
    assert float(raw.param_floor_s) == pytest.approx(first + F * (params - first), rel=1e-12)

    plain = make_problem(num_devices=16, framework=fw.model_copy(update={
        "overlap_grad_reduce": False, "overlap_param_gather": False}))
    raw0 = data_parallel_raw(plain, PlanVars.from_plan(plan), spec)
    assert float(raw0.grad_floor_s) == float(raw0.grad_s) and float(raw0.param_floor_s) == float(raw0.param_s)


def _zero3_exposed(monkeypatch, share: float) -> float:
    monkeypatch.setattr(kernels, "COMM_SM_FRACTION", share)
    fast = make_problem(num_devices=16)
    fast = Problem(model=fast.model, cluster=with_bandwidth(fast.cluster, 100.0), task=fast.task)
    return evaluate(fast, Plan(tp=1, pp=1, dp=16, zero_stage=3, micro_batch_size=1)).zero_exposed_s


def test_zero3_prefetches_that_fit_cost_the_sm_share_of_their_time(monkeypatch):
    """On a network fast enough that every block's gather and scatter hides under the previous
    block, ZeRO-3's exposure is the first block's collectives plus f times the hidden ones: linear
    in f, and the first block's alone at f = 0 (the model before this change)."""
    z0, z1, z2 = (_zero3_exposed(monkeypatch, s) for s in (0.0, F, 2 * F))
    assert z1 > z0 > 0.0
    assert z2 - z1 == pytest.approx(z1 - z0, rel=1e-9)


def _tp_block(monkeypatch, share: float, bandwidth: float = 1.0):
    monkeypatch.setattr(kernels, "UB_COMM_SM_FRACTION", share)
    model = small_model(hidden_size=4096, num_heads=32, num_kv_heads=8, ffn_hidden_size=14336)
    problem = make_problem(num_devices=8, model=model)
    problem = Problem(model=problem.model, cluster=with_bandwidth(problem.cluster, bandwidth), task=problem.task)
    plan = Plan(tp=4, sp=True, tp_comm_overlap=True, dp=2, micro_batch_size=1)
    return problem, layer_cost(problem, PlanVars.from_plan(plan))


def test_userbuffers_reduce_scatter_side_holds_its_sms_by_hand(monkeypatch):
    """TE's userbuffers overlap: of the t - 1 chunks hidden under the GEMMs, the reduce-scatter
    side runs on 16 of 132 SMs (the all-gathers on copy engines): the hidden part exposes
    UB_COMM_SM_FRACTION times the reduce-scatters' share of it, forward and backward."""
    share = kernels.UB_COMM_SM_FRACTION
    assert share == pytest.approx(16 / 132)
    problem, base = _tp_block(monkeypatch, 0.0)
    _, contended = _tp_block(monkeypatch, share)
    t = 4
    fwd, bwd = float(sum(base.tp_fwd_by_tier)), float(sum(base.tp_bwd_by_tier))
    assert fwd * (t - 1) / t < float(base.gemm_fwd_s)  # the hidden chunks fit under the GEMMs
    # Under SP each pair is an all-gather and a reduce-scatter of the same bytes on the same tier.
    from planner.core.collectives import collective_time_by_tier, members_per_tier

    act = 2048 * problem.model.hidden_size * 2.0
    members = members_per_tier(problem.cluster, [4], [1])
    ag = sum(collective_time_by_tier("all_gather", act, members, problem.cluster))
    rs = sum(collective_time_by_tier("reduce_scatter", act, members, problem.cluster))
    rs_share = rs / (ag + rs)
    assert float(contended.tp_exposed_fwd_s - base.tp_exposed_fwd_s) == pytest.approx(
        share * rs_share * fwd * (t - 1) / t, rel=1e-9)
    assert float(contended.tp_exposed_bwd_s - base.tp_exposed_bwd_s) == pytest.approx(
        share * rs_share * bwd * (t - 1) / t, rel=1e-9)


def test_userbuffers_chunks_longer_than_the_gemms_expose_the_excess_only(monkeypatch):
    """On a slow network the hidden chunks outlast the GEMMs: the GEMMs' lost SMs hide under the
    communication, so the exposure is the excess alone, as without contention."""
    _, base = _tp_block(monkeypatch, 0.0, bandwidth=0.01)
    _, contended = _tp_block(monkeypatch, kernels.UB_COMM_SM_FRACTION, bandwidth=0.01)
    assert float(contended.tp_exposed_fwd_s) == pytest.approx(float(base.tp_exposed_fwd_s), rel=1e-12)
    assert float(contended.tp_exposed_bwd_s) == pytest.approx(float(base.tp_exposed_bwd_s), rel=1e-12)


def test_the_stage0_bound_holds_where_the_data_parallel_floor_dips():
    """The floor (1 - f) * bucket + f * collective can dip inside the admissible layer range (an
    8 MB bucket here): the stage-0 bound takes its two parts' minima apart, so it never exceeds a
    configuration's best partition, and CP-SAT meets the oracle with a 1 ms network latency."""
    import numpy as np

    from planner.llm.bounds import time_lower_bound
    from planner.llm.space import SpaceOptions, enumerate_candidates
    from planner.llm.task import Constraints, Framework, TrainingTask
    from planner.llm.problem import load_cluster
    from solvers import SOLVERS, SolveOptions
    from solvers.exhaustive import best_partition

    def problem(bucket, latency, hidden, layers, vocab, n=16):
        model = small_model(num_layers=layers, hidden_size=hidden, num_heads=8, num_kv_heads=2,
                            ffn_hidden_size=3 * hidden, vocab_size=vocab)
        base = load_cluster("dgx-h100", num_devices=n)
        tiers = base.tiers if latency is None else [t.model_copy(update={"latency_s": latency}) for t in base.tiers]
        task = TrainingTask(global_batch_size=n, seq_len=512, framework=Framework(grad_bucket_bytes=bucket),
                            constraints=Constraints(recompute=["none"]))
        return Problem(model=model, cluster=base.model_copy(update={"tiers": tiers}), task=task)

    p = problem(8e6, None, 512, 13, 8000)
    c = enumerate_candidates(p, options=SpaceOptions(max_virtual_stages=1, max_micro_batch_size=1,
                                                     axis_orders="megatron"))
    bound = time_lower_bound(p, c)
    checked = 0
    for i in np.flatnonzero(c.pp >= 2):
        best = best_partition(p, c.plan(int(i)))
        if best is not None:
            checked += 1
            assert bound[i] <= best[0] * (1 + 1e-9), c.plan(int(i)).summary()
    assert checked > 10

    p = problem(1.6e8, 1e-3, 2048, 13, 256)
    opts = SolveOptions(space=SpaceOptions(max_virtual_stages=1, max_micro_batch_size=1), max_evaluations=300_000)
    oracle, cpsat = SOLVERS["exhaustive"].solve(p, opts), SOLVERS["cpsat"].solve(p, opts)
    assert cpsat.status == "OPTIMAL"
    assert cpsat.objective_s == pytest.approx(oracle.objective_s, rel=1e-6)


def test_overlap_never_exposes_more_than_no_overlap_on_the_data_parallel_axis():
    """The SM share only charges what overlap hides: an overlapped step is never slower than the
    same step with the data-parallel collectives exposed in full."""
    for zero in (0, 1, 2):
        problem = make_problem(num_devices=16)
        fw = problem.task.framework
        plain = make_problem(num_devices=16, framework=fw.model_copy(update={
            "overlap_grad_reduce": False, "overlap_param_gather": False}))
        plan = Plan(tp=2, sp=True, pp=2, dp=4, zero_stage=zero, micro_batch_size=1)
        assert evaluate(problem, plan).step_time_s <= evaluate(plain, plan).step_time_s
