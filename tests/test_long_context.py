"""Long context (issue 11): attention time by sequence length and head dim from measured kernel
throughput, and context parallelism as Transformer Engine's ring (Megatron-Core's default
`--cp-comm-type p2p`) or an all-gather of K and V (torchtitan). Hand derivations cite the rates of
planner/data/efficiency.yaml `attention_by_seqlen` (FlashAttention-3 paper, Fig. 5-6, H100 SXM5).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from planner.core.kernels import COMM_SM_FRACTION, FLASH_BACKWARD_FACTOR
from planner.llm.cost import attention
from planner.llm.cost.layer import layer_cost
from planner.llm.cost.layout import PlanVars
from planner.llm.cost.step import evaluate
from planner.llm.plan import Plan
from planner.llm.problem import Problem, load_cluster
from planner.llm.task import Framework

from .conftest import make_problem, small_model, with_bandwidth

H128 = dict(hidden_size=2048, num_heads=16, num_kv_heads=4, max_seq_len=65536)
"""A small model with 128-wide heads (the table's head dim)."""


FUSED = {"profile": "megatron-core@0.16", "options": {"attention_backend": "fused"}}
"""Megatron-Core with Transformer Engine's cuDNN attention at its measured rates."""


def problem(seq_len: int, gbs: int = 16, framework: dict | None = None, **kw):
    return make_problem(model=small_model(**H128), seq_len=seq_len, global_batch_size=gbs,
                        framework=Framework(**(FUSED if framework is None else framework)), **kw)


def rescaled(p, scale: float):
    return Problem(model=p.model, cluster=with_bandwidth(p.cluster, scale), task=p.task)


def layer(p, plan: Plan):
    return layer_cost(p, PlanVars.from_plan(plan))


def peak(p) -> float:
    return p.cluster.device.peak("bf16")


@pytest.mark.parametrize(("seq_len", "fwd_causal", "fwd_full", "bwd_full"), [
    (4096, 518, 609, 499),     # cuDNN, head dim 128: Fig. 5d, 5c, 6b at 4k
    (16384, 539, 595, 516),    # ... at 16k
])
def test_one_layer_attention_time_by_hand_at_two_lengths(seq_len, fwd_causal, fwd_full, bwd_full):
    """Megatron-Core (cuDNN) on H100, TP 2, one sequence: the causal half of QK^T and AV,
    2 * s * (s/2) * (128 + 128) * 8 heads FLOPs forward, at the causal forward rate; backward 2.5x
    the FLOPs at the non-causal backward rate x (causal / non-causal forward rate)."""
    p = problem(seq_len)
    lc = layer(p, Plan(tp=2, sp=True, dp=8))
    flops = 2.0 * seq_len * (seq_len / 2.0) * (128 + 128) * 8
    scale = peak(p) / 989e12  # the table's rates are fractions of the 989 TFLOP/s peak
    assert lc.attention_fwd_s == pytest.approx(flops / (fwd_causal * 1e12 * scale), rel=1e-9)
    bwd_rate = bwd_full * fwd_causal / fwd_full * 1e12 * scale
    assert lc.attention_bwd_s == pytest.approx(FLASH_BACKWARD_FACTOR * flops / bwd_rate, rel=1e-9)


def test_longer_sequences_run_attention_at_a_higher_rate():
    """Per executed FLOP, a 16k-token call is faster than a 1k-token one (Fig. 5d: 539 vs 410)."""
    short, long = problem(1024), problem(16384)
    plan = Plan(tp=2, sp=True, dp=8)
    per_flop = [layer(x, plan).attention_fwd_s / x.task.seq_len ** 2 for x in (short, long)]
    assert per_flop[1] < per_flop[0]
    assert per_flop[0] / per_flop[1] == pytest.approx(539 / 410, rel=1e-9)


def test_head_dim_between_table_points_is_interpolated():
    """Head dim 96 sits halfway between the 64 and 128 rows."""
    device = make_problem().cluster.device
    f64 = attention.fractions("cudnn", device, 4096, 64, causal=True)[0]
    f128 = attention.fractions("cudnn", device, 4096, 128, causal=True)[0]
    f96 = attention.fractions("cudnn", device, 4096, 96, causal=True)[0]
    assert f64 == pytest.approx(363 / 989) and f128 == pytest.approx(518 / 989)
    assert f96 == pytest.approx((f64 + f128) / 2)


def test_default_backend_keeps_the_preset_rate():
    """Megatron-Core's `auto` backend (the default) is priced at the preset's flat fraction."""
    p = problem(8192, framework={})
    f = p.cluster.device.efficiency.attention_fraction
    lc = layer(p, Plan(tp=2, sp=True, dp=8))
    assert lc.attention_fwd_s == pytest.approx(2.0 * 8192 * 4096 * 256 * 8 / (peak(p) * f), rel=1e-9)


def test_devices_without_a_table_keep_the_preset_rate():
    a100 = load_cluster("dgx-a100-80gb", num_devices=16)
    p = problem(8192, cluster=a100)
    f = p.cluster.device.efficiency.attention_fraction
    lc = layer(p, Plan(tp=2, sp=True, dp=8))
    flops = 2.0 * 8192 * 4096 * 256 * 8
    assert lc.attention_fwd_s == pytest.approx(flops / (peak(p) * f), rel=1e-9)


def test_ring_attention_steps_by_hand():
    """CP 2 at 32k: step 0 causal on the local 16k x 16k (539 TFLOP/s), step 1 a non-causal
    16k x 8k half block, its rate the mean (in time) of 8k (600) and 16k (595) keys; each step one
    half of the causal total."""
    p = problem(32768)
    lc = layer(p, Plan(tp=2, sp=True, cp=2, dp=4))
    tokens = 16384
    step = 2.0 * tokens * (32768 / 2.0) * 256 * 8 / 2
    scale = peak(p) / 989e12
    expected = step / (539e12 * scale) + step * (1 / 600e12 + 1 / 595e12) / 2 / scale
    assert lc.attention_fwd_s == pytest.approx(expected, rel=1e-9)


def test_ring_sends_hide_under_attention_steps_on_nvlink():
    """CP 2 inside one node: 16k positions' K and V (2 x 16k x 512 x 2 B = 33.6 MB) cross NVLink in
    well under a step's attention: only the SMs the sends hold are exposed (COMM_SM_FRACTION of
    each send: one K,V send forward; backward the first iteration's K,V and the last's dK,dV)."""
    lc = layer(problem(32768), Plan(tp=2, sp=True, cp=2, dp=4))
    sends_fwd = float(sum(lc.cp_fwd_by_tier))
    assert sends_fwd > 0.0
    assert float(lc.cp_exposed_fwd_s) == pytest.approx(COMM_SM_FRACTION * sends_fwd, rel=1e-12)
    assert float(lc.cp_exposed_bwd_s) == pytest.approx(COMM_SM_FRACTION * 2 * sends_fwd, rel=1e-12)
    assert float(lc.cp_exposed_fwd_s) < 0.01 * float(lc.attention_fwd_s)


def test_ring_send_exposed_by_hand_when_the_network_is_slow():
    """With the network 1000x slower, the forward exposes (cp - 1) x (send - step) and the
    backward two K,V-only sends and cp - 2 double sends, each less a backward step."""
    p = problem(32768, num_devices=16)
    slow = rescaled(p, 1e-3)
    plan = Plan(tp=2, sp=True, cp=4, dp=2)
    lc = layer(slow, plan)
    tier = slow.cluster.tiers[0]
    chunk = 8192 * (512 + 512) / 2 * 2  # this GPU's 8k positions of K and V, TP 2, 2 B each
    hop = tier.latency_s + chunk / (tier.bandwidth_bytes_per_s * tier.efficiency)
    hop2 = tier.latency_s + 2 * chunk / (tier.bandwidth_bytes_per_s * tier.efficiency)
    fwd, bwd, half_f, half_b = attention.flash_time_s(
        "cudnn", slow.cluster.device, 32768, 4, 8192, 256 * 8, 128)
    assert float(lc.attention_fwd_s) == pytest.approx(float(fwd), rel=1e-12)
    assert float(lc.cp_exposed_fwd_s) == pytest.approx(3 * (hop - float(half_f)), rel=1e-9)
    assert float(lc.cp_exposed_bwd_s) == pytest.approx(2 * (hop - float(half_b)) + 2 * (hop2 - float(half_b)), rel=1e-9)


def test_torchtitan_allgather_exposes_the_gather():
    """torchtitan's CP (torch's ALL_GATHER rotate method): the all-gather of the sequence's K,V
    forward and all-gather + reduce-scatter backward are exposed in full."""
    p = problem(32768, framework={"profile": "torchtitan@2024-12"})
    lc = layer(p, Plan(tp=2, sp=True, cp=2, dp=4))
    assert float(lc.cp_exposed_fwd_s) == pytest.approx(float(sum(lc.cp_fwd_by_tier)), rel=1e-12)
    assert float(lc.cp_exposed_bwd_s) == pytest.approx(float(sum(lc.cp_bwd_by_tier)), rel=1e-12)
    assert float(lc.cp_exposed_fwd_s) > 0.0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cp=st.sampled_from([1, 2, 4]), tp=st.sampled_from([1, 2, 4]), mbs=st.sampled_from([1, 2]),
       recompute=st.sampled_from(["none", "selective", "full"]),
       titan=st.booleans())
def test_cp_never_increases_per_gpu_activation_memory(cp, tp, mbs, recompute, titan):
    """Doubling CP (same TP, DP halved to keep the GPU count) never grows any stage's activation
    or transient memory per GPU."""
    assume(16 // (tp * cp * 2) >= 1)
    framework = {"profile": "torchtitan@2024-12"} if titan else {}
    p = problem(16384, gbs=32, framework=framework)
    base = Plan(tp=tp, sp=tp > 1, cp=cp, dp=16 // (tp * cp), micro_batch_size=mbs, recompute=recompute)
    more = Plan(tp=tp, sp=tp > 1, cp=2 * cp, dp=16 // (tp * cp * 2), micro_batch_size=mbs, recompute=recompute)
    a, b = evaluate(p, base), evaluate(p, more)
    for sa, sb in zip(a.stages, b.stages, strict=True):
        assert sb.memory.activations_bytes <= sa.memory.activations_bytes * (1 + 1e-12)
        assert sb.memory.transient_bytes <= sa.memory.transient_bytes * (1 + 1e-12)


@settings(max_examples=30, deadline=None)
@given(cp=st.sampled_from([2, 4, 8]), scale=st.sampled_from([0.01, 0.1, 1.0]),
       comm=st.sampled_from(["p2p", "a2a", "allgather"]))
def test_more_bandwidth_never_exposes_more_cp_time(cp, scale, comm):
    p = problem(65536, num_devices=32, gbs=8,
                framework={"profile": "megatron-core@0.16", "options": {"cp_comm_type": comm}})
    plan = Plan(tp=2, sp=True, cp=cp, dp=32 // (2 * cp))
    slow = rescaled(p, scale)
    fast = rescaled(p, scale * 2)
    ls, lf = layer(slow, plan), layer(fast, plan)
    assert float(lf.cp_exposed_fwd_s) <= float(ls.cp_exposed_fwd_s) + 1e-15
    assert float(lf.cp_exposed_bwd_s) <= float(ls.cp_exposed_bwd_s) + 1e-15


def test_ulysses_all_to_all_by_hand():
    """Megatron-Core `cp_comm_type: a2a` (TE AttnFuncWithCPAndQKVOA2A), CP 2 in one node: one
    causal call over all 32k keys (the same FLOPs per GPU as the ring), and exposed all-to-alls:
    forward Q, K, V and O, backward O, dO and dQ, dK, dV, each member sending its share across."""
    p = problem(32768, framework={"profile": "megatron-core@0.16",
                                  "options": {"attention_backend": "fused", "cp_comm_type": "a2a"}})
    lc = layer(p, Plan(tp=2, sp=True, cp=2, dp=4))
    tokens, t = 16384, 2
    fwd, bwd, _, _ = attention.flash_time_s("cudnn", p.cluster.device, 32768, 1, tokens, 256 * 8, 128)
    assert float(lc.attention_fwd_s) == pytest.approx(float(fwd), rel=1e-12)
    tier = p.cluster.tiers[0]
    qkv = tokens * (2048 + 512 + 512) / t * 2
    out = tokens * 2048 / t * 2

    def a2a(num_bytes):  # 2 members: half of each member's bytes cross
        return tier.latency_s + num_bytes / 2 / (tier.bandwidth_bytes_per_s * tier.efficiency)

    assert float(lc.cp_exposed_fwd_s) == pytest.approx(a2a(qkv + out), rel=1e-9)
    assert float(lc.cp_exposed_bwd_s) == pytest.approx(a2a(qkv + 2 * out), rel=1e-9)


def test_torchtitan_gathers_the_repeated_k_and_v(monkeypatch):
    """torchtitan@9dec370 repeats K and V to every query head (repeat_kv) before
    F.scaled_dot_product_attention, the call torch's context parallelism patches: its all-gather
    moves n_heads / n_kv_heads = 4 times the K and V bytes of the un-repeated tensors (the
    16-head, 4-KV-head model here), by hand through the collective on the same group."""
    from planner.core.collectives import collective_time_by_tier
    from planner.llm import frameworks
    from planner.llm.cost.layout import group_members

    p = problem(32768, framework={"profile": "torchtitan@2024-12"})
    plan = Plan(tp=2, sp=True, cp=2, dp=4)
    v = PlanVars.from_plan(plan)
    tokens = 32768 / 2  # this GPU's share of the sequence (micro-batch 1)
    kv_width = 2 * 4 * 128 / 2  # K and V, 4 KV heads of 128, split over TP 2
    members = group_members(p.cluster, v, ("cp",))
    gathered = collective_time_by_tier("all_gather", 2 * tokens * 4 * kv_width * 2.0, members, p.cluster)
    lc = layer(p, plan)
    assert float(sum(lc.cp_fwd_by_tier)) == pytest.approx(float(sum(gathered)), rel=1e-9)
    resolve = frameworks.resolve_facts
    monkeypatch.setattr(frameworks, "resolve_facts", lambda n, o: resolve(n, o).model_copy(update={"repeat_kv": False}))
    plain = collective_time_by_tier("all_gather", 2 * tokens * kv_width * 2.0, members, p.cluster)
    assert float(sum(layer(p, plan).cp_fwd_by_tier)) == pytest.approx(float(sum(plain)), rel=1e-9)
