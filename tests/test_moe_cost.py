"""The MoE training cost model: hand-derived volumes and sizes, the expert grid, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.core.hardware import Cluster
from planner.llm.cost import moe_params
from planner.llm.cost.blocks import block_costs, block_params, layer_mix
from planner.llm.cost.layout import PlanVars
from planner.llm.cost.memory import stage_expert_params
from planner.llm.cost.moe import FP8_DISPATCH_BYTES, dispatch_bytes_per_token, dispatcher_times
from planner.llm.cost.layer import context
from planner.llm.cost.step import evaluate
from planner.llm.plan import Plan, check_plan
from planner.llm.problem import Problem, build, load_cluster, load_model
from planner.llm.task import TrainingTask


def problem(model: str = "qwen3-30b-a3b", cluster: str = "dgx-h100", gpus: int = 16, gbs: int = 64,
            precision: str = "fp8", **task) -> Problem:
    training = build(TrainingTask, {"global_batch_size": gbs, "seq_len": 4096, "precision": precision, **task}, "t")
    return Problem(model=load_model(model), cluster=load_cluster(cluster, num_devices=gpus), task=training)


def test_deepseek_v3_dispatches_about_172_kb_per_token_per_layer_forward():
    """moe.md sec. 3: 8 copies x (7.2 KB fp8 dispatch + 14.3 KB bf16 combine) ~ 172 KB forward.
    Backward both all-to-alls carry bf16 gradients: 8 x 2 x 14.3 KB ~ 229 KB (the note's "about
    the same" keeps one leg in fp8)."""
    model = load_model("deepseek-v3")
    forward, backward = dispatch_bytes_per_token(model)
    assert forward == 8 * 7168 * (1 + 4 / 128 + 2)
    assert forward == pytest.approx(172e3, rel=0.015)
    assert backward == 8 * 7168 * 4 == pytest.approx(229e3, rel=0.002)
    assert FP8_DISPATCH_BYTES * 7168 == pytest.approx(7.2e3, rel=0.03)


def test_the_all_to_all_inside_a_node_moves_the_remote_share_at_nvlink_speed():
    """EP 8 on one DGX H100: each rank sends 7/8 of T*k*h*2 bytes over NVLink per all-to-all."""
    p = problem(gpus=8)
    plan = Plan(dp=8, ep=8)
    v = PlanVars.from_plan(plan)
    fwd, bwd = dispatcher_times(p, v, context(p, v))
    tier = p.cluster.tiers[0]
    one = 4096 * 8 * 2048 * 2.0 * 7 / 8 / (tier.bandwidth_bytes_per_s * tier.efficiency) + tier.latency_s
    assert float(sum(fwd)) == pytest.approx(2 * one, rel=1e-9)  # bf16 dispatch + combine
    assert float(sum(bwd)) == pytest.approx(2 * one, rel=1e-9)


def test_an_ep_group_across_nodes_is_paced_by_the_network():
    """EP 16 over two nodes: half of every rank's copies cross InfiniBand, which is slower."""
    p = problem(gpus=16)
    v = PlanVars.from_plan(Plan(dp=16, ep=16))
    fwd, _ = dispatcher_times(p, v, context(p, v))
    nvlink, network = (float(x) for x in fwd)
    assert nvlink == 0.0 and network > 0
    ib = p.cluster.tiers[1]
    share = 4096 * 8 * 2048 * 2.0 / 2
    assert network == pytest.approx(2 * (share / (ib.bandwidth_bytes_per_s * ib.efficiency) + ib.latency_s), rel=1e-9)


def test_mla_sizes_of_deepseek_v3():
    """KV cache 512 + 64 elements per token per layer; latents 1536 + 512 + 64; heads 128 x 192 for
    queries/keys and 128 x 128 for values."""
    model = load_model("deepseek-v3")
    assert moe_params.kv_cache_width(model) == 576
    assert moe_params.latent_width(model) == 2112
    assert (model.attention_width, model.kv_width, model.value_width) == (24576, 24576, 16384)
    assert moe_params.attention_params(model) == pytest.approx(187e6, rel=0.01)


def test_mla_attention_activations_follow_the_formula():
    """Attention half, no recompute, bf16, tp 1: 2T(q + k + v) + 2T*out + 2T*latents + norm input,
    GEMM input, fp32 log-sum-exp: checked against the MoE block minus its FFN half."""
    from planner.llm.cost.layer import residual_half
    from planner.llm.cost.moe import moe_ffn_half

    p = problem("deepseek-v3", gpus=1024, gbs=1024, precision="bf16")
    plan = Plan(dp=1024, ep=64)
    v = PlanVars.from_plan(plan)
    x = context(p, v)
    block = block_costs(p, v).moe
    ffn = moe_ffn_half(p, v, x)
    T = 4096
    _, stored = residual_half(p, x)
    attention = 2 * T * (24576 + 24576 + 16384) + 2 * T * 16384 + 2 * T * 2112 + 4 * T * 128
    assert float(block.activation_none_bytes - ffn.activation_bytes) == pytest.approx(attention + float(stored))


def test_experts_shard_over_ep_and_etp_and_reduce_over_edp():
    p = problem("deepseek-v3", gpus=1024, gbs=1024)
    plan = Plan(tp=2, sp=True, dp=512, ep=64)
    assert plan.edp == 2 * 512 // 64
    per_layer = float(block_params(p, PlanVars.from_plan(plan)).moe_expert)
    assert per_layer == 256 / 64 * 3 * 7168 * 2048
    folded = Plan(tp=2, sp=True, dp=512, ep=32, etp=2)
    assert float(block_params(p, PlanVars.from_plan(folded)).moe_expert) == per_layer


def test_layer_mix_counts_the_moe_blocks_of_each_stage():
    v3 = load_model("deepseek-v3")  # 3 dense layers, then 58 MoE
    assert layer_mix(v3, [7, 8, 8, 8, 8, 8, 8, 6], 4) == [6, 6, 8, 8, 8, 8, 8, 6]
    assert layer_mix(v3, [61], 1) == [58]
    assert layer_mix(v3, [31, 30], 1) == [28, 30]
    maverick = load_model("llama4-maverick")  # every second layer
    assert layer_mix(maverick, [24, 24], 2) == [12, 12]
    assert layer_mix(load_model("llama3-8b"), [16, 16], 1) == [0, 0]


def test_the_expert_grid_rules():
    p = problem()
    assert check_plan(Plan(dp=16, ep=16), p) == []
    assert any("not divisible by ep" in e for e in check_plan(Plan(dp=16, ep=3), p))
    assert any("does not divide the ranks" in e for e in check_plan(Plan(dp=16, ep=32), p))
    assert any("need sp: true" in e for e in check_plan(Plan(tp=2, dp=8, ep=8), p))
    assert any("outermost" in e for e in check_plan(Plan(pp=2, dp=8, ep=8, axis_order=["tp", "pp", "cp", "dp"]), p))
    assert check_plan(Plan(tp=2, sp=True, dp=8, ep=16), p) == []  # folding: EP beyond DP
    dense = problem("llama3-8b", gpus=8)
    assert any("apply to MoE models" in e for e in check_plan(Plan(dp=8, ep=2), dense))


def test_parts_sum_to_the_step_time_and_the_last_stage_carries_mtp():
    p = problem("deepseek-v3", gpus=1024, gbs=1024)
    plan = Plan(tp=2, sp=True, pp=8, dp=64, ep=64, dispatcher="flex", stage_layers=[7, 8, 8, 8, 8, 8, 8, 6])
    b = evaluate(p, plan)
    assert sum(b.parts.values()) == pytest.approx(b.step_time_s, rel=1e-9)
    assert b.ep_exposed_s > 0 and "ep" in b.exposed_by_axis_tier
    without = evaluate(Problem(model=p.model.model_copy(update={"mtp_layers": 0}), cluster=p.cluster, task=p.task), plan)
    assert b.stages[-1].backward_s > without.stages[-1].backward_s
    assert b.stages[0].backward_s == pytest.approx(without.stages[0].backward_s)


def test_overlap_hides_the_all_to_all_but_not_the_sms_it_holds():
    p = problem()
    plain = evaluate(p, Plan(dp=16, ep=16))
    hidden = evaluate(p, Plan(dp=16, ep=16, ep_comm_overlap=True))
    assert 0 < hidden.ep_exposed_s < plain.ep_exposed_s


def test_imbalance_slows_the_busiest_rank():
    fast = evaluate(problem(), Plan(dp=16, ep=16)).step_time_s
    slow = evaluate(problem(moe_load_imbalance=1.5), Plan(dp=16, ep=16)).step_time_s
    assert slow > fast


def test_full_recompute_applies_to_moe_blocks_only():
    p = problem("deepseek-v3", gpus=1024, gbs=1024)
    plan = Plan(tp=2, sp=True, pp=8, dp=64, ep=64, stage_layers=[7, 8, 8, 8, 8, 8, 8, 6], recompute="full",
                recompute_num_layers=[5, 8, 8, 8, 8, 8, 8, 6])
    assert any("MoE blocks" in e for e in check_plan(plan, p))
    ok = plan.model_copy(update={"recompute_num_layers": [4, 8, 8, 8, 8, 8, 8, 6]})
    assert check_plan(ok, p) == []
    assert evaluate(p, ok).stages[0].recomputed_layers == 4


# -- properties ---------------------------------------------------------------------------------

def _cluster_with(cluster: Cluster, tier: int, factor: float) -> Cluster:
    tiers = list(cluster.tiers)
    tiers[tier] = tiers[tier].model_copy(update={"bandwidth_bytes_per_s": tiers[tier].bandwidth_bytes_per_s * factor})
    return cluster.model_copy(update={"tiers": tiers})


PLANS = st.builds(
    lambda ep, dispatcher, overlap, mbs: Plan(dp=16, ep=ep, dispatcher=dispatcher if ep > 1 else "alltoall",
                                              ep_comm_overlap=overlap and ep > 1 and dispatcher != "allgather",
                                              micro_batch_size=mbs),
    st.sampled_from([1, 2, 4, 8, 16]), st.sampled_from(["alltoall", "allgather", "flex"]), st.booleans(),
    st.sampled_from([1, 2, 4]),
)


@settings(max_examples=40, deadline=None)
@given(PLANS, st.sampled_from([0, 1]), st.floats(1.0, 8.0))
def test_more_bandwidth_on_a_tier_never_slows_a_step(plan, tier, factor):
    p = problem()
    faster = Problem(model=p.model, cluster=_cluster_with(p.cluster, tier, factor), task=p.task)
    assert evaluate(faster, plan).step_time_s <= evaluate(p, plan).step_time_s * (1 + 1e-12)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["qwen3-30b-a3b", "deepseek-v3", "mixtral-8x7b", "gpt-oss-120b"]),
       st.sampled_from([1, 2, 4, 8]))
def test_more_expert_parallelism_never_adds_expert_memory_per_gpu(preset, ep):
    p = problem(preset, gpus=64)
    experts = p.model.moe.num_experts
    if experts % (2 * ep):
        return
    one = stage_expert_params(p, PlanVars.from_plan(Plan(dp=64, ep=ep)), False, 10)
    two = stage_expert_params(p, PlanVars.from_plan(Plan(dp=64, ep=2 * ep)), False, 10)
    assert float(two) == pytest.approx(float(one) / 2)
    full_one = evaluate(p, Plan(dp=64, ep=ep)).stages[0].memory
    full_two = evaluate(p, Plan(dp=64, ep=2 * ep)).stages[0].memory
    assert full_two.weights_bytes + full_two.grads_bytes <= full_one.weights_bytes + full_one.grads_bytes


@settings(max_examples=30, deadline=None)
@given(PLANS)
def test_every_part_is_finite_and_non_negative(plan):
    b = evaluate(problem(), plan)
    assert all(math.isfinite(x) and x >= 0 for x in b.parts.values())
    assert sum(b.parts.values()) == pytest.approx(b.step_time_s, rel=1e-9)
    assert np.isfinite(b.peak_memory_bytes)
