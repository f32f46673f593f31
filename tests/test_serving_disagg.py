"""Disaggregated serving (planner.serving.disagg, solvers.serving_disagg): the KV transfer and the
pools' rates by hand, the decode pool's round equal to the colocated model's decode-only round,
the deployment paced by the slower pool, the search equal to a joint brute force over the
declared space (the separable search is exact), re-pricing, monotonicity, and bad plans."""

import dataclasses
import math
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.cli.common import load_task
from planner.serving.cost import evaluate
from planner.serving.disagg import (
    DisaggregatedPlan,
    ServingPool,
    check_disaggregated,
    decode_max_batch,
    evaluate_disaggregated,
    kv_transfer_s,
    price_prefill,
    transfer_tier,
)
from planner.serving.memory import kv_cache_bytes_per_token, mean_context_tokens
from planner.serving.plan import ServingPlan
from solvers import serving_disagg as search

from .conftest import PROBLEMS
from .test_serving_solve import write_task

TASK = str(PROBLEMS / "tasks" / "llama3-70b-8xh100-serving.yaml")


def plan_of(prefill: dict, decode: dict) -> DisaggregatedPlan:
    return DisaggregatedPlan(family="serving", prefill=prefill, decode=decode)


def test_kv_transfer_by_hand_inside_one_node():
    problem = load_task(TASK)  # Llama-3 70B, fp8 KV, one DGX H100: the NVLink tier carries the cache
    assert transfer_tier(problem) == 0
    per_token = 2 * 80 * 8 * 128 * 1.0  # K and V x layers x KV heads x head dim x 1 B (fp8)
    assert kv_cache_bytes_per_token(problem) == per_token
    pool = ServingPool(tp=4, dp=1)
    nvlink = problem.cluster.tiers[0]
    expected = nvlink.latency_s + 2048 * per_token / 4 / (nvlink.bandwidth_bytes_per_s * nvlink.efficiency)
    assert kv_transfer_s(problem, pool, 2048) == pytest.approx(expected, rel=1e-12)


def test_kv_transfer_crosses_the_scale_out_tier_beyond_one_node(tmp_path):
    problem = load_task(write_task(tmp_path, model="llama3-70b", devices=16, input_tokens=4096))
    assert transfer_tier(problem) == 1
    pool = ServingPool(tp=8, pp=2, dp=1)
    per_token = kv_cache_bytes_per_token(problem)
    scale_out = problem.cluster.tiers[1]
    expected = scale_out.latency_s + 4096 * per_token * 40 / 80 / 8 / (
        scale_out.bandwidth_bytes_per_s * scale_out.efficiency)
    assert kv_transfer_s(problem, pool, 4096) == pytest.approx(expected, rel=1e-12)


def test_prefill_rate_is_the_chunk_over_the_pass():
    problem = load_task(TASK)
    pool = ServingPool(tp=4, dp=1, max_num_batched_tokens=8192)
    price = price_prefill(problem, pool)
    # 8192-token passes of 2048-token prompts: 4 prompts per pass
    assert price.requests_per_s == pytest.approx(min(4 / price.pass_s, price.network_requests_per_s))
    # one pass per prompt plus its KV transfer (pp = 1)
    assert price.ttft_max_s == pytest.approx(price.pass_s + kv_transfer_s(problem, pool, 2048))


def test_decode_round_equals_the_colocated_decode_only_round():
    """The decode pool's TPOT is the colocated model's round without the prompt tokens mixed in,
    for the same replica shape and micro-batch."""
    problem = load_task(TASK)
    colocated = evaluate(problem, ServingPlan(family="serving", tp=4, pp=1, dp=2, max_num_seqs=64))
    pure_round = sum(v for k, v in colocated.decode_parts.items() if k != "prefill")
    plan = plan_of({"tp": 4, "dp": 1}, {"tp": 4, "dp": 1, "max_num_seqs": 64})
    # the colocated replicas run 64 each (concurrency 128 over 2); the decode pool runs its max_num_seqs
    e = evaluate_disaggregated(dataclasses.replace(problem, task=problem.task.model_copy(
        update={"concurrency": None})), plan)
    assert e.batch_per_replica == colocated.batch_per_replica == 64
    assert e.tpot_s == pytest.approx(pure_round, rel=1e-12)
    assert e.tpot_s < colocated.tpot_s  # no prompt tokens in the round


def test_the_slower_pool_sets_the_pace():
    problem = load_task(TASK)
    free = dataclasses.replace(problem, task=problem.task.model_copy(update={"concurrency": None}))
    plan = plan_of({"tp": 4, "dp": 1}, {"tp": 4, "dp": 1, "max_num_seqs": 128})
    e = evaluate_disaggregated(free, plan)
    steps = 256 - 1
    decode_rate = 128 / (steps * e.tpot_s)
    assert e.decode_requests_per_s == pytest.approx(decode_rate)
    assert e.requests_per_s == pytest.approx(min(e.prefill_requests_per_s, decode_rate))
    assert e.bottleneck == ("prefill" if e.prefill_requests_per_s < decode_rate else "decode")
    assert e.output_tokens_per_s_per_gpu == pytest.approx(e.requests_per_s * 256 / 8)
    # more decode sequences per replica: the decode rate grows, the prefill pool does not change
    bigger = evaluate_disaggregated(free, plan_of({"tp": 4, "dp": 1}, {"tp": 4, "dp": 1, "max_num_seqs": 256}))
    assert bigger.prefill_requests_per_s == e.prefill_requests_per_s
    assert bigger.decode_requests_per_s > e.decode_requests_per_s


def test_parts_sum_to_the_totals():
    problem = load_task(TASK)
    e = evaluate_disaggregated(problem, plan_of({"tp": 2, "pp": 2, "dp": 1, "max_num_batched_tokens": 4096},
                                                {"tp": 4, "dp": 1, "max_num_seqs": 96}))
    assert sum(e.prefill_parts.values()) == pytest.approx(e.ttft_max_s, rel=1e-9)
    assert sum(e.decode_parts.values()) == pytest.approx(e.tpot_s, rel=1e-9)
    assert e.prefill_parts["kv_transfer"] == e.kv_transfer_max_s > 0


def _joint_brute_force(problem) -> float | None:
    """Every (split, prefill shape, chunk, decode shape, decode batch) of the declared space
    priced jointly as a whole plan by evaluate_disaggregated, checked here against memory and
    the targets: no separation by pool assumed."""
    targets = problem.task.targets
    devices = problem.cluster.num_devices
    best = None
    for size in search.pool_sizes(problem):
        for shape_p in search._shapes(problem, size):
            for chunk in search.PREFILL_CHUNKS:
                prefill = shape_p.model_copy(update={"max_num_batched_tokens": chunk})
                for shape_d in search._shapes(problem, devices - size):
                    fitting = decode_max_batch(problem, shape_d, tied=True)
                    for batch in search._decode_batches(problem, shape_d, fitting):
                        decode = shape_d.model_copy(update={"max_num_seqs": batch,
                                                            "max_num_batched_tokens": max(batch, shape_d.pp)})
                        e = evaluate_disaggregated(problem, DisaggregatedPlan(family="serving", prefill=prefill,
                                                                              decode=decode))
                        if not e.fits:
                            continue
                        if targets.ttft_s is not None and e.ttft_max_s > targets.ttft_s:
                            continue
                        if targets.tpot_s is not None and e.tpot_s > targets.tpot_s:
                            continue
                        best = max(best or 0.0, e.output_tokens_per_s_per_gpu)
    return best


@pytest.mark.parametrize("seed", range(20))
def test_search_equals_a_joint_brute_force(tmp_path, seed):
    rng = random.Random(seed)
    model = rng.choice(["llama3-8b", "llama2-7b", "mixtral-8x7b", "qwen3-30b-a3b"])
    path = write_task(tmp_path, model=model, devices=rng.choice([2, 4] if model.startswith(("mix", "qwen")) else [2, 4, 8]),
                      precision=rng.choice(["bf16", "fp8"]),
                      input_tokens=rng.choice([256, 1024, 3000]), output_tokens=rng.choice([2, 64, 300]),
                      concurrency=rng.choice([None, 8, 64]), ttft=rng.choice([None, "300ms", "2s"]),
                      tpot=rng.choice([None, "12ms", "30ms"]))
    problem = load_task(path)
    result = search.solve_disaggregated(problem)
    expected = _joint_brute_force(problem)
    if expected is None:
        assert result.status == "INFEASIBLE" and result.infeasibility
    else:
        assert result.status == "OPTIMAL"
        assert result.objective_tokens_per_s_per_gpu == pytest.approx(expected, rel=1e-12)
        assert result.best_bound_tokens_per_s_per_gpu == result.objective_tokens_per_s_per_gpu


def test_the_returned_plan_reprices_to_the_objective():
    problem = load_task(TASK)
    result = search.solve_disaggregated(problem, pareto=True)
    assert result.status == "OPTIMAL"
    plan = result.plan
    assert not check_disaggregated(plan, problem)
    again = evaluate_disaggregated(problem, plan)
    assert again.output_tokens_per_s_per_gpu == pytest.approx(result.objective_tokens_per_s_per_gpu, rel=1e-12)
    assert again.tpot_s <= problem.task.targets.tpot_s and again.ttft_max_s <= problem.task.targets.ttft_s
    front = result.pareto
    assert front and all(a.estimate.tpot_s < b.estimate.tpot_s and a.throughput_per_gpu < b.throughput_per_gpu
                         for a, b in zip(front, front[1:]))


def test_pools_take_whole_nodes_beyond_one_node(tmp_path):
    problem = load_task(write_task(tmp_path, model="llama3-8b", devices=24))
    assert search.pool_sizes(problem) == [8, 16]
    small = load_task(write_task(tmp_path, model="llama3-8b", devices=4, name="small.yaml"))
    assert search.pool_sizes(small) == [1, 2, 3]
    one = load_task(write_task(tmp_path, model="llama3-8b", devices=1, name="one.yaml"))
    result = search.solve_disaggregated(one)
    assert result.status == "INFEASIBLE" and "at least two GPUs" in result.infeasibility


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tight=st.sampled_from([9, 12, 15, 20]), loose_extra=st.sampled_from([1, 5, 40]))
def test_a_looser_tpot_target_never_lowers_the_optimum(tmp_path, tight, loose_extra):
    tight_problem = load_task(write_task(tmp_path, concurrency=None, tpot=f"{tight}ms", name="a.yaml"))
    loose_problem = load_task(write_task(tmp_path, concurrency=None, tpot=f"{tight + loose_extra}ms", name="b.yaml"))
    a = search.solve_disaggregated(tight_problem).objective_tokens_per_s_per_gpu or 0.0
    b = search.solve_disaggregated(loose_problem).objective_tokens_per_s_per_gpu or 0.0
    assert b >= a


@settings(max_examples=10, deadline=None)
@given(scale=st.floats(min_value=1.0, max_value=3.0))
def test_more_hbm_never_lowers_the_largest_decode_batch(scale):
    problem = load_task(TASK)
    device = problem.cluster.device
    bigger = dataclasses.replace(problem, cluster=problem.cluster.model_copy(update={
        "device": device.model_copy(update={"hbm_bytes": device.hbm_bytes * scale})}))
    pool = ServingPool(tp=2, dp=1)
    assert decode_max_batch(bigger, pool) >= decode_max_batch(problem, pool)


def test_a_longer_prompt_never_shortens_the_first_token(tmp_path):
    short = load_task(write_task(tmp_path, input_tokens=1000, name="s.yaml"))
    long = load_task(write_task(tmp_path, input_tokens=8000, output_tokens=64, name="l.yaml"))
    plan = plan_of({"tp": 1, "dp": 2}, {"tp": 2, "dp": 1, "max_num_seqs": 16})
    assert evaluate_disaggregated(long, plan).ttft_max_s > evaluate_disaggregated(short, plan).ttft_max_s
    assert mean_context_tokens(long) > mean_context_tokens(short)


@pytest.mark.parametrize(("prefill", "decode", "needle"), [
    ({"tp": 4, "dp": 1}, {"tp": 2, "dp": 1, "max_num_seqs": 8}, "4 + 2 = 6 GPUs, but the task has 8"),
    ({"tp": 4, "dp": 1, "max_num_seqs": 8}, {"tp": 4, "dp": 1, "max_num_seqs": 8}, "prefill.max_num_seqs"),
    ({"tp": 3, "dp": 1}, {"tp": 5, "dp": 1, "max_num_seqs": 8}, "prefill: tp (3) must divide"),
    ({"tp": 4, "dp": 1, "ep": 2}, {"tp": 4, "dp": 1, "max_num_seqs": 8}, "prefill: ep (2) applies to mixture"),
    ({"tp": 4, "dp": 1}, {"tp": 4, "dp": 1, "max_num_seqs": 8, "max_num_batched_tokens": 4},
     "decode: max_num_batched_tokens (4) is smaller than max_num_seqs"),
])
def test_bad_plans_name_the_pool_and_field(prefill, decode, needle):
    problem = load_task(TASK)
    errors = check_disaggregated(plan_of(prefill, decode), problem)
    assert any(needle in e for e in errors), errors


def test_static_batching_is_refused(tmp_path):
    problem = load_task(write_task(tmp_path, engine="{name: tensorrt-llm, batching: static}"))
    errors = check_disaggregated(plan_of({"tp": 2, "dp": 1}, {"tp": 2, "dp": 1, "max_num_seqs": 4}), problem)
    assert any("continuous batching" in e for e in errors)
    assert search.solve_disaggregated(problem).status == "INFEASIBLE"


def test_decode_max_batch_is_the_memory_limit():
    problem = load_task(TASK)
    pool = ServingPool(tp=4, dp=1)
    top = decode_max_batch(problem, pool)
    assert top > 0
    from planner.serving.disagg import decode_fits

    assert decode_fits(problem, pool, top) and not decode_fits(problem, pool, top + 1)
    assert math.isfinite(top)


def test_pool_plans_are_serving_plans(tmp_path):
    plan = plan_of({"tp": 4}, {"tp": 4, "max_num_seqs": 8})
    assert isinstance(plan.prefill, ServingPlan) and plan.num_devices == 8
    assert "prefill TP4" in plan.summary() and "decode TP4" in plan.summary()
    assert Path(TASK).exists()
