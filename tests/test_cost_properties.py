"""Properties of the cost model that must hold for every plan (Hypothesis)."""

from __future__ import annotations

import math

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.llm.cost.step import evaluate
from planner.llm.plan import Plan, check_plan
from planner.llm.problem import Problem, load_cluster

from .conftest import make_problem, small_model, with_bandwidth

NUM_DEVICES = 16


@st.composite
def plans(draw, num_devices: int = NUM_DEVICES, allow_interleaved: bool = True):
    tp = draw(st.sampled_from([1, 2, 4, 8]))
    cp = draw(st.sampled_from([1, 2]))
    pp = draw(st.sampled_from([1, 2, 4]))
    if num_devices % (tp * cp * pp):
        tp, cp, pp = 1, 1, 1
    dp = num_devices // (tp * cp * pp)
    mbs = draw(st.sampled_from([1, 2, 4]))
    if 64 % (dp * mbs):
        mbs = 1
    m = 64 // (dp * mbs)
    interleaved = allow_interleaved and pp > 1 and m % pp == 0 and draw(st.booleans())
    zero = draw(st.sampled_from([0, 1, 2, 3]))
    sp = tp > 1 and draw(st.booleans())
    return Plan(
        tp=tp,
        sp=sp,
        tp_comm_overlap=sp and draw(st.booleans()),
        cp=cp,
        pp=pp,
        schedule="interleaved" if interleaved else "1f1b",
        virtual_stages=2 if interleaved else 1,
        dp=dp,
        zero_stage=zero,
        micro_batch_size=mbs,
        recompute=draw(st.sampled_from(["none", "selective", "full"])),
        axis_order=draw(st.permutations(["tp", "cp", "dp", "pp"])),
    )


attention = st.sampled_from(["flash", "unfused"])
precision = st.sampled_from(["bf16", "fp8"])
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def problem_for(attn: str, prec: str, num_devices: int = NUM_DEVICES) -> Problem:
    from planner.llm.task import Framework

    return make_problem(num_devices=num_devices, precision=prec, framework=Framework(attention=attn))


@FAST
@given(plan=plans(), attn=attention, prec=precision)
def test_parts_sum_to_total_and_are_finite(plan, attn, prec):
    problem = problem_for(attn, prec)
    assert check_plan(plan, problem) == []
    b = evaluate(problem, plan)
    parts = b.parts
    assert math.isclose(sum(parts.values()), b.step_time_s, rel_tol=1e-9)
    for name, value in parts.items():
        assert math.isfinite(value) and value >= 0, name
    for stage in b.stages:
        m = stage.memory
        for name in m.__dataclass_fields__:
            value = getattr(m, name)
            assert math.isfinite(value) and value >= 0, name
    assert 0 < b.mfu <= b.hfu + 1e-12


@FAST
@given(plan=plans(), attn=attention, scale=st.sampled_from([1.5, 2.0, 10.0]))
def test_more_bandwidth_never_slows_a_step(plan, attn, scale):
    problem = problem_for(attn, "bf16")
    faster = Problem(
        model=problem.model,
        cluster=with_bandwidth(problem.cluster, scale),
        task=problem.task,
    )
    assert evaluate(faster, plan).step_time_s <= evaluate(problem, plan).step_time_s * (1 + 1e-12)


def _peak_memory(problem: Problem, plan: Plan) -> float:
    return evaluate(problem, plan).peak_memory_bytes


@FAST
@given(plan=plans(num_devices=8, allow_interleaved=False), attn=attention)
def test_memory_per_gpu_never_grows_with_tp(plan, attn):
    """Doubling TP (with or without SP) at fixed DP, CP, PP and micro-batching."""
    if plan.tp * 2 > 16:
        return
    small = problem_for(attn, "bf16", num_devices=plan.num_gpus)
    large = problem_for(attn, "bf16", num_devices=plan.num_gpus * 2)
    wider = plan.model_copy(update={"tp": plan.tp * 2, "sp": plan.sp})
    assert check_plan(wider, large) == []
    assert _peak_memory(large, wider) <= _peak_memory(small, plan) * (1 + 1e-12)


@FAST
@given(plan=plans(num_devices=8, allow_interleaved=False), attn=attention)
def test_memory_per_gpu_never_grows_with_pp(plan, attn):
    """Doubling 1F1B pipeline stages at fixed TP, CP, DP and micro-batching."""
    if plan.pp * 2 > 8:
        return
    small = problem_for(attn, "bf16", num_devices=plan.num_gpus)
    large = problem_for(attn, "bf16", num_devices=plan.num_gpus * 2)
    deeper = plan.model_copy(update={"pp": plan.pp * 2})
    assert check_plan(deeper, large) == []
    assert _peak_memory(large, deeper) <= _peak_memory(small, plan) * (1 + 1e-12)


def test_interleaving_shrinks_the_bubble():
    problem = make_problem(num_devices=16)
    plain = evaluate(problem, Plan(pp=4, dp=4, micro_batch_size=1))
    interleaved = evaluate(problem, Plan(pp=4, dp=4, micro_batch_size=1, schedule="interleaved", virtual_stages=2))
    assert interleaved.bubble_s < plain.bubble_s


def test_bubble_is_p_minus_1_over_m_for_equal_stages():
    """Middle stages are equal; with the edges tiny the bubble is ~ (p-1)/m of the steady state."""
    problem = make_problem(num_devices=4, model=small_model(vocab_size=256), global_batch_size=32)
    b = evaluate(problem, Plan(pp=4, micro_batch_size=1))
    steady = b.step_time_s - b.bubble_s - b.dp_exposed_s - b.optimizer_s
    assert abs(b.bubble_s / steady - 3 / 32) < 0.01


def test_full_recompute_trades_time_for_memory():
    problem = make_problem(num_devices=8)
    none = evaluate(problem, Plan(tp=8, sp=True, recompute="none"))
    full = evaluate(problem, Plan(tp=8, sp=True, recompute="full"))
    assert full.step_time_s > none.step_time_s
    assert full.peak_memory_bytes < none.peak_memory_bytes
    assert full.recompute_s > 0 and none.recompute_s == 0


def test_zero_stages_shrink_memory_in_order():
    problem = make_problem(num_devices=16)
    memory = [evaluate(problem, Plan(dp=16, zero_stage=z)).peak_memory_bytes for z in (0, 1, 2, 3)]
    assert memory == sorted(memory, reverse=True)


def test_cluster_preset_resolves_tiers():
    cluster = load_cluster("dgx-h100", num_devices=64)
    assert [t.name for t in cluster.tiers] == ["nvlink", "infiniband"]
    assert cluster.tier_size(0) == 8 and cluster.tier_size(1) == 64


def test_1f1b_exposes_every_pipeline_hop_and_interleaving_hides_a_short_one():
    """Megatron overlaps pipeline sends with the next chunk's compute only in the interleaved
    schedule (arguments.py turns overlap_p2p_comm off without virtual stages; Megatron-Bridge sets
    it only for vp > 1): a 1F1B step pays each hop, one per micro-batch each way, by hand here;
    an interleaved step hides a hop shorter than a chunk's compute, but for the SMs its kernels
    hold (COMM_SM_FRACTION of it stays exposed)."""
    problem = make_problem(num_devices=16)
    one_f_one_b = Plan(tp=1, pp=2, dp=8, micro_batch_size=1, axis_order=["tp", "cp", "dp", "pp"])
    micro_batches = 64 // 8
    # The two stages sit on different nodes: one activation (2048 tokens x 1024 x 2 B) over the
    # outermost tier.
    tier = problem.cluster.tiers[-1]
    hop_s = tier.latency_s + 2048 * 1024 * 2 / (tier.bandwidth_bytes_per_s * tier.efficiency)
    exposed = evaluate(problem, one_f_one_b)
    assert exposed.pp_p2p_s == pytest.approx(micro_batches * 2 * hop_s, rel=1e-9)

    interleaved = one_f_one_b.model_copy(update={"schedule": "interleaved", "virtual_stages": 2})
    hidden = evaluate(problem, interleaved)
    from planner.core.kernels import COMM_SM_FRACTION
    from planner.llm.task import Framework

    assert hidden.pp_p2p_s == pytest.approx(COMM_SM_FRACTION * micro_batches * 2 * 2 * hop_s, rel=1e-9)
    no_overlap = make_problem(num_devices=16, framework=Framework(overlap_p2p_comm=False))
    assert evaluate(no_overlap, interleaved).pp_p2p_s == pytest.approx(micro_batches * 2 * 2 * hop_s, rel=1e-9)
