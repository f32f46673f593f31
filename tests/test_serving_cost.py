"""The serving cost model as a specification: hand-derived KV-cache sizes, the bandwidth-bound
decode step, the latency-bound TP all-reduce, the compute-bound prefill, the steady-state
identities, and Hypothesis properties (memory, context, parts summing to totals)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.core.collectives import collective_time_s
from planner.core.inputs import load_cluster
from planner.llm.cost import flops
from planner.llm.model import DenseTransformer
from planner.llm.problem import load_model
from planner.serving.cost import DECODE_PARTS, PREFILL_PARTS, evaluate
from planner.serving.forward import PassLoad, pass_cost, tp_members
from planner.serving.memory import (
    kv_cache_bytes_per_token,
    kv_cache_bytes_per_token_gpu,
    max_batch,
    mean_context_tokens,
    weight_bytes_per_gpu,
)
from planner.serving.plan import ServingPlan
from planner.serving.problem import ServingProblem
from planner.serving.task import InferenceTask

H100_HBM_BYTES_PER_S = 3.35e12
H100_HBM_FRACTION = 0.80  # problems/devices/h100-sxm5-80gb.yaml


def serving(model: str | DenseTransformer = "llama3-70b", num_devices: int = 8, cluster=None, **task) -> ServingProblem:
    task.setdefault("requests", {"input_tokens": 128, "output_tokens": 128})
    model = load_model(model) if isinstance(model, str) else model
    cluster = cluster or load_cluster("dgx-h100", num_devices=num_devices)
    return ServingProblem(model=model, cluster=cluster, task=InferenceTask.model_validate(task))


def plan(**fields) -> ServingPlan:
    return ServingPlan.model_validate({"family": "serving", **fields})


# -- KV cache ---------------------------------------------------------------------------------

def test_kv_cache_bytes_per_token_of_llama3_70b_by_hand():
    """GQA: 2 (K and V) x 80 layers x 8 KV heads x 128 head dim x 2 B (bf16) = 327,680 B
    (320 KiB) per token; an fp8 cache halves it."""
    assert kv_cache_bytes_per_token(serving(kv_cache_dtype="bf16")) == 327_680
    assert kv_cache_bytes_per_token(serving(kv_cache_dtype="fp8")) == 163_840


def test_kv_heads_split_over_tp_then_replicated():
    """TP 4: 2 of the 8 KV heads per GPU (2 x 80 x 2 x 128 x 2 B = 81,920 B per token); TP 16 on
    two nodes: one replicated head per GPU (40,960 B), not half a head."""
    problem = serving(num_devices=16)
    assert kv_cache_bytes_per_token_gpu(problem, tp=4, layers=80) == 81_920
    assert kv_cache_bytes_per_token_gpu(problem, tp=16, layers=80) == 40_960


def test_mean_context_of_a_decoding_slot_is_time_weighted():
    """A request of 100 prompt and 4 output tokens decodes at contexts 101..104: mean 102.5; a mix
    weights each kind by its steps (4 steps at mean 102.5, 2 at 11.5: 72.17)."""
    assert mean_context_tokens(serving(requests={"input_tokens": 100, "output_tokens": 4})) == 102.5
    mix = serving(requests={"buckets": [{"input_tokens": 100, "output_tokens": 4},
                                        {"input_tokens": 10, "output_tokens": 2}]})
    assert mean_context_tokens(mix) == pytest.approx((4 * 102.5 + 2 * 11.5) / 6)


# -- decode: weights streamed from HBM --------------------------------------------------------

def test_single_request_decode_step_is_weights_over_achievable_hbm_bandwidth():
    """Llama-3 8B in bf16 on one H100, one request: every step multiplies by every weight matrix
    once -- the 8.03 B parameters less the input embedding, of which a lookup reads one row
    (128,256 x 4096 = 0.53 B): 7.50 B x 2 B = 15.01 GB -- at 0.80 x 3.35 TB/s = 2.68 TB/s: 5.60 ms.
    The KV cache of a 16-token context, the norms and the all-gather-free LM head add well under 5%."""
    problem = serving("llama3-8b", num_devices=1, requests={"input_tokens": 16, "output_tokens": 16},
                      concurrency=1, engine={"name": "tensorrt-llm", "batching": "static"})
    estimate = evaluate(problem, plan(tp=1, dp=1))
    model = problem.model
    streamed = (flops.total_params(model) - model.vocab_size * model.hidden_size) * 2.0
    assert streamed == pytest.approx(15.01e9, rel=0.01)
    expected = streamed / (H100_HBM_BYTES_PER_S * H100_HBM_FRACTION)
    assert estimate.tpot_s == pytest.approx(expected, rel=0.05)
    assert estimate.decode_parts["gemm"] + estimate.decode_parts["lm_head"] >= 0.95 * expected


def test_the_decode_gemms_are_memory_bound_and_amortised_over_the_batch():
    """From 1 to 32 sequences the weights are still read once per step: the GEMM part grows by
    far less than the batch (here by under 10%), so tokens per second grow almost 32-fold."""
    problem = serving("llama3-8b", num_devices=1)
    one = pass_cost(problem, 1, 32, True, True, PassLoad(decode_seqs=1, decode_context_tokens=128, logit_seqs=1))
    many = pass_cost(problem, 1, 32, True, True, PassLoad(decode_seqs=32, decode_context_tokens=128, logit_seqs=32))
    assert many.gemm < 1.1 * one.gemm
    assert 32 / many.total_s > 25 / one.total_s


# -- TP all-reduce at decode sizes --------------------------------------------------------------

def test_tp_all_reduce_at_decode_size_is_latency_bound():
    """One sequence of Llama-3 70B: each all-reduce moves 8192 x 2 B = 16 KiB; over 8 GPUs on
    NVLink (450 GB/s at 0.82) the bandwidth term is 2 x 7/8 x 16 KiB / 369 GB/s = 0.08 us against
    the tier's 53 us latency: over 99.8% of the time is latency."""
    problem = serving(num_devices=8)
    tier = problem.cluster.tiers[0]
    size = 8192 * 2
    time = float(collective_time_s("all_reduce", size, tp_members(problem, 8), problem.cluster))
    bandwidth_term = size * 2 * 7 / 8 / (tier.bandwidth_bytes_per_s * tier.efficiency)
    assert time == pytest.approx(tier.latency_s + bandwidth_term)
    assert tier.latency_s / time > 0.998


def test_a_decode_step_pays_two_all_reduces_per_layer():
    """80 layers x 2 all-reduces of one token's hidden state, plus the logits all-gather."""
    problem = serving(num_devices=8)
    cost = pass_cost(problem, 8, 80, True, True, PassLoad(decode_seqs=1, decode_context_tokens=128, logit_seqs=1))
    members = tp_members(problem, 8)
    one = float(collective_time_s("all_reduce", 8192 * 2, members, problem.cluster))
    gather = float(collective_time_s("all_gather", 128256 * 2, members, problem.cluster))
    assert cost.tp_comm == pytest.approx(160 * one + gather)


# -- prefill: compute-bound ---------------------------------------------------------------------

def test_a_long_prompt_is_compute_bound():
    """An 8000-token prompt of Llama-3 8B (bf16, one H100): the layers' weight GEMMs need
    2 x 6.98 B x 8000 FLOPs at 0.743 x 989.4 TFLOP/s = 152 ms, far above the 6 ms of streaming
    the weights, and the GEMM part of TTFT is that compute time (the per-call overheads add 0.1%)."""
    problem = serving("llama3-8b", num_devices=1, requests={"input_tokens": 8000, "output_tokens": 1},
                      concurrency=1)
    estimate = evaluate(problem, plan(tp=1, dp=1))
    model = problem.model
    gemm_flops = 2 * 8000 * model.num_layers * (flops.layer_matmul_flops_per_token(model) / 2)
    compute = gemm_flops / (989.4e12 * 0.743)
    assert estimate.prefill_parts["gemm"] == pytest.approx(compute, rel=0.01)
    assert estimate.prefill_parts["attention"] > 0
    streaming = (flops.total_params(model) - model.vocab_size * model.hidden_size) * 2.0 / (3.35e12 * 0.80)
    assert estimate.prefill_parts["gemm"] > 20 * streaming


# -- batching identities ------------------------------------------------------------------------

def test_continuous_throughput_is_the_batch_over_the_round():
    problem = serving(concurrency=96, weight_precision="fp8", kv_cache_dtype="fp8")
    estimate = evaluate(problem, plan(tp=4, dp=2))
    assert estimate.batch_per_replica == 48
    assert estimate.output_tokens_per_s == pytest.approx(2 * 48 / estimate.tpot_s)
    assert estimate.output_tokens_per_s_per_gpu == pytest.approx(estimate.output_tokens_per_s / 8)


def test_static_throughput_counts_the_prefill_and_every_decode_step():
    problem = serving(concurrency=64, requests={"input_tokens": 512, "output_tokens": 100},
                      engine={"name": "tensorrt-llm", "batching": "static"})
    estimate = evaluate(problem, plan(tp=8, dp=1))
    total = estimate.ttft_s + 99 * estimate.tpot_s
    assert estimate.output_tokens_per_s == pytest.approx(64 * 100 / total)


def test_pipeline_rounds_run_pp_micro_batches():
    """PP 2: each of the two stages holds 40 layers and runs both micro-batches of 16 per round."""
    problem = serving(concurrency=32, requests={"input_tokens": 128, "output_tokens": 64},
                      engine={"name": "tensorrt-llm", "batching": "static"})
    estimate = evaluate(problem, plan(tp=4, pp=2, dp=1))
    assert estimate.micro_batch == 16
    stage = pass_cost(problem, 4, 40, True, False, PassLoad(decode_seqs=16, decode_context_tokens=128 + 32,
                                                            logit_seqs=16))
    last = pass_cost(problem, 4, 40, False, True, PassLoad(decode_seqs=16, decode_context_tokens=128 + 32,
                                                           logit_seqs=16))
    slowest = max(stage.total_s, last.total_s)
    assert estimate.tpot_s == pytest.approx(2 * slowest + estimate.decode_parts["pp_p2p"])
    assert estimate.decode_parts["pp_p2p"] > 0


def test_the_largest_batch_that_fits_is_exact():
    problem = serving(weight_precision="fp8", kv_cache_dtype="fp8", requests={"input_tokens": 2048,
                                                                               "output_tokens": 2048})
    layout = plan(tp=2, dp=4)
    largest = max_batch(problem, layout)
    assert largest > 0
    assert evaluate(problem, layout.model_copy(update={"max_num_seqs": largest})).fits
    assert not evaluate(problem, layout.model_copy(update={"max_num_seqs": largest + 1})).fits


def test_weights_per_gpu_shrink_with_tp_and_pp():
    problem = serving(num_devices=16)
    whole = weight_bytes_per_gpu(problem, 1, 80, True, True)
    assert weight_bytes_per_gpu(problem, 8, 80, True, True) < whole / 7
    assert weight_bytes_per_gpu(problem, 1, 40, True, False) < 0.55 * whole


# -- properties ---------------------------------------------------------------------------------

MODELS = st.builds(
    lambda layers, heads, group, head_dim, ffn, gated: DenseTransformer(
        name="random", num_layers=layers, hidden_size=heads * head_dim, num_heads=heads,
        num_kv_heads=heads // group, ffn_hidden_size=ffn * 128, gated_mlp=gated, vocab_size=32000,
        max_seq_len=65536),
    st.integers(1, 48), st.sampled_from([8, 16, 32, 64]), st.sampled_from([1, 2, 4, 8]),
    st.sampled_from([64, 128]), st.integers(8, 224), st.booleans(),
)
TASKS = st.fixed_dictionaries({
    "requests": st.fixed_dictionaries({"input_tokens": st.integers(1, 8192), "output_tokens": st.integers(1, 4096)}),
    "weight_precision": st.sampled_from(["bf16", "fp8"]),
    "kv_cache_dtype": st.sampled_from(["bf16", "fp8"]),
    "engine": st.fixed_dictionaries({"name": st.sampled_from(["vllm", "sglang", "tensorrt-llm"]),
                                     "batching": st.sampled_from(["continuous", "static"]),
                                     "decode_attention": st.sampled_from(["grouped", "per_query_head"])}),
})


def _cluster_with_hbm(hbm_bytes: float, num_devices: int = 8):
    cluster = load_cluster("dgx-h100", num_devices=num_devices)
    return cluster.model_copy(update={"device": cluster.device.model_copy(update={"hbm_bytes": hbm_bytes})})


@settings(max_examples=60, deadline=None)
@given(model=MODELS, task=TASKS, tp=st.sampled_from([1, 2, 4, 8]),
       hbm=st.floats(8e9, 300e9), extra=st.floats(0, 300e9))
def test_more_hbm_never_lowers_the_largest_batch_that_fits(model, task, tp, hbm, extra):
    tp = min(tp, model.num_kv_heads)
    small = ServingProblem(model=model, cluster=_cluster_with_hbm(hbm), task=InferenceTask.model_validate(task))
    large = ServingProblem(model=model, cluster=_cluster_with_hbm(hbm + extra),
                           task=InferenceTask.model_validate(task))
    layout = plan(tp=tp, dp=8 // tp)
    assert max_batch(small, layout) <= max_batch(large, layout)


@settings(max_examples=60, deadline=None)
@given(model=MODELS, task=TASKS, tp=st.sampled_from([1, 2, 4, 8]), seqs=st.integers(1, 512),
       context=st.floats(0, 65536), longer=st.floats(0, 65536))
def test_a_longer_context_never_shortens_a_decode_step(model, task, tp, seqs, context, longer):
    tp = min(tp, model.num_kv_heads)
    problem = ServingProblem(model=model, cluster=_cluster_with_hbm(80e9), task=InferenceTask.model_validate(task))
    short = pass_cost(problem, tp, model.num_layers, True, True,
                      PassLoad(decode_seqs=seqs, decode_context_tokens=context, logit_seqs=seqs))
    long = pass_cost(problem, tp, model.num_layers, True, True,
                     PassLoad(decode_seqs=seqs, decode_context_tokens=context + longer, logit_seqs=seqs))
    assert long.total_s >= short.total_s


@settings(max_examples=40, deadline=None)
@given(model=MODELS, task=TASKS, tp=st.sampled_from([1, 2, 4, 8]), pp=st.sampled_from([1, 2]),
       concurrency=st.integers(1, 1024))
def test_parts_sum_to_the_totals_and_everything_is_finite(model, task, tp, pp, concurrency):
    tp = min(tp, model.num_kv_heads)
    pp = min(pp, model.num_layers, 8 // tp)
    problem = ServingProblem(model=model, cluster=_cluster_with_hbm(80e9),
                             task=InferenceTask.model_validate({**task, "concurrency": concurrency}))
    estimate = evaluate(problem, plan(tp=tp, pp=pp, dp=8 // (tp * pp)))
    assert sum(estimate.decode_parts[p] for p in DECODE_PARTS) == pytest.approx(estimate.tpot_s, rel=1e-9)
    assert sum(estimate.prefill_parts[p] for p in PREFILL_PARTS) == pytest.approx(estimate.ttft_max_s, rel=1e-9)
    for value in (estimate.tpot_s, estimate.ttft_s, estimate.output_tokens_per_s, *estimate.decode_parts.values(),
                  *estimate.prefill_parts.values()):
        assert math.isfinite(value) and value >= -1e-12
    assert estimate.ttft_s <= estimate.ttft_max_s * (1 + 1e-12)


def test_fp4_weights_where_the_device_has_an_fp4_peak():
    """NVFP4 on a GB200: 4-bit values plus one fp8 scale per 16 (0.5625 B per weight of the layers;
    the embedding and LM head stay bf16); its GEMMs run at the fp4 peak (10 PFLOP/s dense)."""
    b200 = load_cluster("gb200-nvl72", num_devices=8)
    fp4 = serving(cluster=b200, weight_precision="fp4")
    fp8 = serving(cluster=b200, weight_precision="fp8")
    layers_fp4 = weight_bytes_per_gpu(fp4, 8, 80, False, False)
    layers_fp8 = weight_bytes_per_gpu(fp8, 8, 80, False, False)
    norms = 2 * 80 * 8192 * 2.0
    assert (layers_fp4 - norms) / (layers_fp8 - norms) == pytest.approx(0.5625)
    assert b200.device.peak("fp4") == 10_000e12
    from planner.core.errors import InputError

    with pytest.raises(InputError, match="inference.weight_precision: fp4 needs a fp4 peak"):
        serving(weight_precision="fp4")  # H100: no fp4


@settings(max_examples=100, deadline=None)
@given(layers=st.integers(1, 400), pp=st.integers(1, 400))
def test_the_stage_kinds_are_every_distinct_stage(layers, pp):
    """Pricing one stage of each kind prices them all: the kinds are exactly the distinct
    (layers, first, last) of the pipeline's stages."""
    from planner.serving.memory import stage_kinds, stage_layers

    pp = min(pp, layers)
    per_stage = stage_layers(layers, pp)
    assert sum(per_stage) == layers and max(per_stage) - min(per_stage) <= 1
    every = {(n, i == 0, i == pp - 1) for i, n in enumerate(per_stage)}
    kinds = stage_kinds(layers, pp)
    assert {(n, first, last) for _, n, first, last in kinds} == every
    assert all(per_stage[i] == n for i, n, _, _ in kinds)
