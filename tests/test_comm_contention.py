"""Communication beside compute: an overlapped collective's kernels hold SMs the compute lacks
(planner.core.kernels COMM_SM_FRACTION), and Transformer Engine's userbuffers TP overlap runs its
'pipeline' and 'bulk' GEMMs on 16 fewer SMs (UB_SM_MARGIN_SLOWDOWN). Each term by hand."""

from __future__ import annotations

import pytest

from planner.core import kernels
from planner.llm import frameworks
from planner.llm.cost.layer import layer_cost
from planner.llm.cost.layout import PlanVars
from planner.llm.cost.step import data_parallel_raw, evaluate, plan_stage_specs
from planner.llm.plan import Plan
from planner.llm.problem import Problem

from .conftest import make_problem, with_bandwidth

F = kernels.COMM_SM_FRACTION


def test_the_shares_are_the_cited_sm_counts():
    """24 of an H100's 132 SMs (NCCL's CTAs, DeepEP's kernels); TE's margin of 16 SMs."""
    assert F == pytest.approx(24 / 132)
    assert kernels.UB_SM_MARGIN_SLOWDOWN == pytest.approx(132 / 116 - 1)


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


def _tp_block(monkeypatch, margin: float, model=None):
    monkeypatch.setattr(kernels, "UB_SM_MARGIN_SLOWDOWN", margin)
    problem = make_problem(num_devices=8, model=model)
    plan = Plan(tp=4, sp=True, tp_comm_overlap=True, dp=2, micro_batch_size=1)
    return problem, layer_cost(problem, PlanVars.from_plan(plan))


def test_userbuffers_margin_slows_the_pipeline_and_bulk_gemms_by_hand(monkeypatch):
    """TE's defaults: forward, the output projection and fc2 ('pipeline', feeding the
    reduce-scatters) run on 116 of 132 SMs; backward, the data and weight gradients of QKV and fc1
    ('bulk') do; the ring-exchange GEMMs (QKV and fc1 forward, the projection's and fc2's data
    gradients) keep every SM."""
    m = kernels.UB_SM_MARGIN_SLOWDOWN
    problem, base = _tp_block(monkeypatch, 0.0)
    _, with_margin = _tp_block(monkeypatch, m)
    d_fwd = float(with_margin.tp_exposed_fwd_s - base.tp_exposed_fwd_s)
    d_bwd = float(with_margin.tp_exposed_bwd_s - base.tp_exposed_bwd_s)
    qkv_share, up_share = frameworks.tp_input_gemm_shares(problem.model)
    # The block's GEMMs on 2048 tokens, TP 4: the attention projections (wq, wk, wv, wo: 2 calls,
    # QKV fused) and the SwiGLU MLP (fc1 with gate and up, fc2: 2 calls) at the GEMM rate.
    h, f = problem.model.hidden_size, problem.model.ffn_hidden_size
    qw, kvw = problem.model.attention_width, problem.model.kv_width
    device, precision = problem.cluster.device, problem.task.precision
    attn = kernels.gemm_time_s(2048 * (2 * h * (qw + 2 * kvw) + 2 * qw * h) / 4, 2, device, precision)
    mlp = kernels.gemm_time_s(2048 * (2 * h * 2 * f + 2 * f * h) / 4, 2, device, precision)
    assert d_fwd == pytest.approx(m * ((1 - qkv_share) * float(attn) + (1 - up_share) * float(mlp)), rel=1e-9)
    assert d_bwd == pytest.approx(m * 2 * (qkv_share * float(attn) + up_share * float(mlp)), rel=1e-9)
    assert d_fwd + d_bwd / 2 == pytest.approx(m * float(with_margin.gemm_fwd_s), rel=1e-9)


def test_without_tp_overlap_there_is_no_margin(monkeypatch):
    problem = make_problem(num_devices=8)
    plan = Plan(tp=4, sp=True, tp_comm_overlap=False, dp=2, micro_batch_size=1)
    monkeypatch.setattr(kernels, "UB_SM_MARGIN_SLOWDOWN", 0.0)
    base = layer_cost(problem, PlanVars.from_plan(plan))
    monkeypatch.setattr(kernels, "UB_SM_MARGIN_SLOWDOWN", 0.5)
    again = layer_cost(problem, PlanVars.from_plan(plan))
    assert float(again.tp_exposed_fwd_s) == float(base.tp_exposed_fwd_s)
    assert float(again.tp_exposed_bwd_s) == float(base.tp_exposed_bwd_s)


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
