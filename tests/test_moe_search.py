"""The exact search over MoE models: EP, ETP, the token dispatcher and EP overlap are decisions
of the same CP-SAT search, over the aligned stage partitions (planner.llm.candidates.Alignment).

- On random small MoE instances (Hypothesis, derandomized: all-MoE, dense-prefix, period-2 and
  explicit-pattern models, 2-16 GPUs, random constraints), CP-SAT's optimum equals the
  exhaustive oracle's, the cost model's re-evaluation of the plan equals CP-SAT's objective
  within its rounding bound, and no heuristic plan in the same space beats it.
- The alignment formula (MoE blocks per stage) equals the cost model's layer_mix.
- Shipped-preset MoE problems solve to OPTIMAL quickly; a pattern the search cannot cut
  exactly is bad input (exit 2).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from planner.core.errors import InputError
from planner.llm.candidates import Alignment, CandidateSet, alignment, price, price_balanced
from planner.llm.cost.blocks import layer_mix
from planner.llm.cost.step import evaluate
from planner.llm.moe_model import MoETransformer
from planner.llm.problem import Problem, load_cluster, load_model
from planner.llm.space import SpaceOptions, enumerate_within, expert_choices
from planner.llm.stage_tables import aligned_layers, balanced_chunks, stage_model
from planner.llm.task import Constraints, DegreeBound, Framework, TrainingTask
from solvers import SOLVERS, SolveOptions
from solvers.exhaustive import aligned_compositions

MAX_PARTITIONS = 150_000

KINDS = {
    "all": {},
    "prefix1": {"first_dense_layers": 1},
    "prefix2": {"first_dense_layers": 2},
    "period2": {"moe_every": 2},
    "period2-prefix": {"first_dense_layers": 1, "moe_every": 2},
    "pattern": "pattern",  # explicit [1, 0, 1, 0, ...]: MoE at even layers (not a k/P form)
}


def tiny_moe(num_layers=4, kind="all", experts=4, top_k=2, hidden=512, heads=8, kv_heads=2, shared=False,
             mtp=0, dispatch="bf16", oss=False) -> MoETransformer:
    """`oss`: gpt-oss's extras, each priced apart (biases, the activation clamp, YaRN, a sliding
    window on every other layer)."""
    moe = {"num_experts": experts, "top_k": min(top_k, experts), "ffn_hidden_size": 2 * hidden,
           "dispatch_dtype": dispatch}
    extras = {}
    if oss:
        moe.update(bias=True, activation_clamp=7.0)
        extras = {"linear_bias": True, "rope_yarn_factor": 32.0, "sliding_window": 128,
                  "full_attention_every": 2 if num_layers >= 2 else None}
    if shared:
        moe.update(shared_experts=1, shared_ffn_hidden_size=2 * hidden)
    spec = KINDS[kind]
    if spec == "pattern":
        moe["layer_pattern"] = [1 - (i % 2) for i in range(num_layers)]
    else:
        moe.update(spec)
    return MoETransformer(name=f"tiny-moe-{kind}", num_layers=num_layers, hidden_size=hidden, num_heads=heads,
                          num_kv_heads=kv_heads, ffn_hidden_size=3 * hidden, vocab_size=8000, max_seq_len=4096,
                          moe=moe, mtp_layers=mtp, **extras)


def layers_for(kind: str, draw) -> int:
    if kind == "period2-prefix":
        return draw(st.sampled_from([4, 6, 8]))
    if kind.startswith("period2") or kind == "pattern":
        return draw(st.sampled_from([2, 4, 6, 8]))
    low = 3 if kind == "prefix2" else 2
    return draw(st.integers(low, 10))


@st.composite
def instances(draw):
    n = draw(st.sampled_from([2, 4, 4, 8, 8, 16]))
    kind = draw(st.sampled_from(sorted(KINDS)))
    model = tiny_moe(
        num_layers=layers_for(kind, draw), kind=kind, experts=draw(st.sampled_from([2, 4, 8])),
        top_k=draw(st.sampled_from([1, 2])), hidden=draw(st.sampled_from([512, 1024])),
        shared=draw(st.booleans()), mtp=draw(st.sampled_from([0, 0, 1])),
        dispatch=draw(st.sampled_from(["bf16", "fp8"])), oss=draw(st.booleans()),
    )
    base = load_cluster("dgx-h100", num_devices=n)
    node = draw(st.sampled_from([2, 4, 8]))
    cluster = base.model_copy(update={
        "device": base.device.model_copy(update={"hbm_bytes": draw(st.sampled_from([0.75, 1.0, 2.0, 4.0])) * 1e9}),
        "tiers": [base.tiers[0].model_copy(update={"size": node}), base.tiers[1]],
    })
    ep_bound = draw(st.sampled_from([DegreeBound(), DegreeBound(), DegreeBound(max=2), DegreeBound(min=2),
                                     DegreeBound(fixed=1)]))
    etp_bound = draw(st.sampled_from([DegreeBound(), DegreeBound(fixed=1)]))
    task = TrainingTask(
        global_batch_size=n * draw(st.sampled_from([1, 2, 4])),
        seq_len=draw(st.sampled_from([512, 1024])),
        moe_load_imbalance=draw(st.sampled_from([1.0, 1.3])),
        framework=Framework(
            framework_overhead_bytes=0.1 * 2**30,
            overlap_grad_reduce=draw(st.booleans()),
        ),
        constraints=Constraints(
            ep=ep_bound, etp=etp_bound,
            recompute=draw(st.sampled_from([["none", "selective", "full"], ["full"], ["none"], ["none", "full"]])),
            zero_stages=draw(st.sampled_from([[0, 1, 2, 3], [0, 1], [3], [1]])),
        ),
    )
    space = SpaceOptions(max_virtual_stages=2, max_micro_batch_size=2,
                         axis_orders=draw(st.sampled_from(["megatron", "tp-inner"])))
    return Problem(model=model, cluster=cluster, task=task), SolveOptions(space=space, max_evaluations=MAX_PARTITIONS)


def in_aligned_space(problem: Problem, plan) -> bool:
    return alignment(problem.model).aligned(plan.layers_per_stage(problem.model.num_layers), plan.virtual_stages)


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(instance=instances())
def test_cpsat_equals_exhaustive_on_moe_models(instance):
    problem, options = instance
    oracle = SOLVERS["exhaustive"].solve(problem, options)
    assume(oracle.status != "UNKNOWN")
    exact = SOLVERS["cpsat"].solve(problem, options)
    if oracle.status == "INFEASIBLE":
        assert exact.status == "INFEASIBLE"
        assert exact.infeasibility
        return
    assert exact.status == "OPTIMAL", exact.notes
    rounding = exact.stats.get("rounding_bound_s", 0.0) + 1e-12
    priced = evaluate(problem, exact.plan)
    assert priced.fits
    assert abs(priced.step_time_s - exact.objective_s) <= rounding
    assert abs(exact.objective_s - oracle.objective_s) <= rounding
    assert oracle.objective_s <= priced.step_time_s * (1 + 1e-12)
    assert in_aligned_space(problem, exact.plan)
    assert exact.gap == 0.0
    for name in ("megatron-rules", "fsdp-only", "greedy"):
        result = SOLVERS[name].solve(problem, options)
        if result.plan is not None and result.breakdown.fits and in_aligned_space(problem, result.plan):
            assert result.objective_s >= oracle.objective_s * (1 - 1e-12), name


# -- the alignment formula --------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_alignment_formula_equals_layer_mix(kind):
    rng = random.Random(kind)
    checked = 0
    for num_layers in range(2, 25):
        try:
            model = tiny_moe(num_layers=num_layers, kind=kind)
        except ValueError:
            continue
        align = alignment(model)
        for v in (1, 2, 3, 4):
            for pp in range(1, 7):
                rows = aligned_compositions(num_layers, pp, v, align)
                for row in rng.sample(list(rows), min(len(rows), 12)):
                    layers = [int(x) for x in row]
                    assert align.aligned(layers, v)
                    units = [n // (v * align.period) for n in layers]
                    formula = [int(align.moe_layers(u, v, i == 0)) for i, u in enumerate(units)]
                    assert formula == layer_mix(model, layers, v), (layers, v)
                    checked += 1
    assert checked > 100


def test_aligned_compositions_are_every_aligned_partition():
    """Brute force over all partitions into multiples of v: exactly the aligned ones are listed."""
    import itertools

    for kind in ("prefix2", "period2", "period2-prefix", "pattern"):
        model = tiny_moe(num_layers=8, kind=kind)
        align = alignment(model)
        for v, pp in ((1, 1), (1, 2), (1, 3), (2, 2), (1, 4)):
            chunks = 8 // v
            every = [list(np.diff([0, *cuts, chunks]) * v)
                     for cuts in itertools.combinations(range(1, chunks), pp - 1)]
            expected = sorted(tuple(p) for p in every if align.aligned(p, v))
            listed = sorted(tuple(int(x) for x in row) for row in aligned_compositions(8, pp, v, align))
            assert listed == expected, (kind, v, pp)


def test_presets_have_the_expected_alignment():
    assert alignment(load_model("deepseek-v3")) == Alignment(period=1, deficit=3, moe=True)
    assert alignment(load_model("llama4-maverick")) == Alignment(period=2, deficit=0, moe=True)
    assert alignment(load_model("mixtral-8x7b")) == Alignment(period=1, deficit=0, moe=True)
    assert alignment(load_model("llama3-8b")) == Alignment()


def test_balanced_split_keeps_the_dense_prefix_on_stage_0():
    assert balanced_chunks(61, 16, 3) == [3] + [4] * 13 + [3, 3]
    assert balanced_chunks(20, 8, 4) == [4, 3, 3, 2, 2, 2, 2, 2]
    assert balanced_chunks(61, 61, 1) == [1] * 61
    assert balanced_chunks(10, 4, 5) == [5, 2, 2, 1]
    assert aligned_layers(load_model("deepseek-v3"), 61, 1) is None  # stage 0 needs 3 layers
    assert sum(aligned_layers(load_model("deepseek-v3"), 16, 1)) == 61
    maverick = aligned_layers(load_model("llama4-maverick"), 16, 1)
    assert sum(maverick) == 48 and all(n % 2 == 0 for n in maverick)


# -- bulk pricing and tables agree with evaluate -----------------------------------------------


def small_problem(kind="prefix2", n=8, layers=8, **task) -> Problem:
    model = tiny_moe(num_layers=layers, kind=kind, experts=8, shared=True, mtp=1)
    cluster = load_cluster("dgx-h100", num_devices=n)
    return Problem(model=model, cluster=cluster, task=TrainingTask(global_batch_size=4 * n, seq_len=1024, **task))


@pytest.mark.parametrize("kind", ["all", "prefix2", "period2-prefix", "pattern"])
def test_balanced_price_of_moe_candidates_equals_evaluate(kind):
    problem = small_problem(kind)
    align = alignment(problem.model)
    candidates, _ = enumerate_within(problem, options=SpaceOptions(max_virtual_stages=2, max_micro_batch_size=2))
    assert len(candidates) > 200
    rng = np.random.default_rng(0)
    for i in rng.choice(len(candidates), size=60, replace=False):
        plan = candidates.plan(int(i))
        layers = aligned_layers(problem.model, plan.pp, plan.virtual_stages)
        assert layers is not None and align.aligned(layers, plan.virtual_stages)
        plan = plan.model_copy(update={"stage_layers": layers})
        b = evaluate(problem, plan)
        priced = price_balanced(problem, CandidateSet.from_plans([plan]))
        assert priced.step_s[0] == pytest.approx(b.step_time_s, rel=1e-9), plan.summary()
        assert priced.peak_memory_bytes[0] == pytest.approx(b.peak_memory_bytes, rel=1e-9), plan.summary()
        if align.uniform(problem.model.num_layers, plan.pp, plan.virtual_stages):
            uniform = plan.model_copy(update={"stage_layers": None})
            assert price(problem, CandidateSet.from_plans([uniform])).step_s[0] == pytest.approx(
                evaluate(problem, uniform).step_time_s, rel=1e-9)


@pytest.mark.parametrize("kind", ["prefix2", "period2-prefix"])
def test_stage_tables_price_every_aligned_partition_as_evaluate(kind):
    from planner.llm.stage_tables import plan_with_partition, step_time_s

    problem = small_problem(kind)
    candidates, _ = enumerate_within(problem, options=SpaceOptions(max_virtual_stages=2, max_micro_batch_size=1))
    rng = np.random.default_rng(1)
    for i in rng.choice(len(candidates), size=25, replace=False):
        sm = stage_model(problem, candidates.plan(int(i)))
        rows = aligned_compositions(problem.model.num_layers, sm.num_stages, sm.virtual_stages, alignment(problem.model))
        for row in rows[: 6]:
            units = [int(n) // sm.unit_layers for n in row]
            recomputed = [sm.recomputable(j, u) if sm.recompute_full else 0 for j, u in enumerate(units)]
            step, peak = step_time_s(sm, units, recomputed)
            b = evaluate(problem, plan_with_partition(sm, units, recomputed))
            assert step == pytest.approx(b.step_time_s, rel=1e-9)
            assert peak == pytest.approx(b.peak_memory_bytes, rel=1e-9)


def test_bounds_are_below_every_aligned_partition():
    """The time lower bound of a configuration is below the exact price of each of its aligned
    partitions (every recompute count too), on configurations of a dense-prefix model."""
    from planner.llm.bounds import memory_lower_bound, time_lower_bound
    from solvers.exhaustive import best_partition

    for kind in ("prefix2", "period2-prefix", "all"):
        problem = small_problem(kind, n=4, layers=8)
        candidates, _ = enumerate_within(problem, options=SpaceOptions(max_virtual_stages=2, max_micro_batch_size=2))
        bounds = time_lower_bound(problem, candidates)
        rng = np.random.default_rng(2)
        for i in rng.choice(len(candidates), size=40, replace=False):
            config = candidates.plan(int(i))
            best = best_partition(problem, config)
            sm = stage_model(problem, config)
            if best is None:
                continue
            assert bounds[i] <= best[0] * (1 + 1e-9), config.summary()
            assert memory_lower_bound(sm) <= evaluate(problem, best[1]).peak_memory_bytes * (1 + 1e-9)


def test_bulk_stage_tables_equal_one_by_one():
    from planner.llm.stage_tables import stage_models

    for kind in ("prefix2", "period2-prefix", "all"):
        problem = small_problem(kind, n=8)
        candidates, _ = enumerate_within(problem, options=SpaceOptions(max_virtual_stages=2, max_micro_batch_size=2))
        sample = candidates.take(np.random.default_rng(4).choice(len(candidates), size=40, replace=False))
        for bulk, i in zip(stage_models(problem, sample), range(len(sample)), strict=True):
            single = stage_model(problem, sample.plan(i))
            assert bulk.config == single.config and bulk.recompute_s == pytest.approx(single.recompute_s, rel=1e-12)
            for a, b in zip(bulk.stages, single.stages, strict=True):
                for name in ("forward_s", "backward_s", "grad_s", "param_floor_s", "optimizer_s", "memory_bytes"):
                    assert np.allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=0), name
                assert a.memory_per_recomputed_bytes == pytest.approx(b.memory_per_recomputed_bytes, rel=1e-12)


def test_table_bounds_and_domains_keep_the_best_partition():
    """pipeline_lower_bound is below the best partition's price (with and without an upper
    bound to stop at), and the stage domains at that price hold the best partition."""
    from planner.llm.bounds import pipeline_lower_bound
    from solvers.cpsat_model import stage_domains
    from solvers.exhaustive import best_partition

    checked = 0
    for kind, n in (("prefix2", 4), ("period2-prefix", 8), ("all", 8), ("prefix1", 2)):
        problem = small_problem(kind, n=n, layers=8)
        candidates, _ = enumerate_within(problem, options=SpaceOptions(max_virtual_stages=2, max_micro_batch_size=2))
        for i in np.random.default_rng(5).choice(len(candidates), size=30, replace=False):
            sm = stage_model(problem, candidates.plan(int(i)))
            best = best_partition(problem, sm.config)
            if best is None:
                continue
            assert pipeline_lower_bound(sm)[0] <= best[0] * (1 + 1e-9)
            assert pipeline_lower_bound(sm, 0.9 * best[0])[0] <= best[0] * (1 + 1e-9)
            units = [n // sm.unit_layers for n in best[1].layers_per_stage(problem.model.num_layers)]
            domains = stage_domains(sm, best[0] * (1 + 1e-9))
            assert domains is not None and all(lo <= u <= hi for u, (lo, hi) in zip(units, domains, strict=True))
            checked += 1
    assert checked > 40


# -- the space ---------------------------------------------------------------------------------


def test_expert_choices_follow_the_rules():
    problem = small_problem("all", n=8)
    rows = expert_choices(problem, 2, 1, 4)
    for ep, etp, dispatcher, overlap in rows.tolist():
        assert etp in (1, 2) and 8 % ep == 0 and 8 % (ep * etp) == 0
        assert not (dispatcher == 2 and etp > 1)  # flex: etp 1
        assert not (overlap and (ep == 1 or dispatcher == 1))
        if ep * etp == 1:
            assert dispatcher == 0 and not overlap
    dense = Problem(model=load_model("llama3-8b"), cluster=problem.cluster, task=problem.task)
    assert expert_choices(dense, 2, 1, 4).tolist() == [[1, 1, 0, 0]]


def test_moe_duplicates_dropped_in_the_enumeration_equal_filtering_after():
    """The search's enumeration (duplicate recompute modes left out, "none" kept with EP
    overlap) lists exactly the rows the dominance filter keeps."""
    from solvers.cpsat import distinct_recompute_modes, dominance_filter

    problem = small_problem("prefix2", n=8)
    space = SpaceOptions(max_virtual_stages=2)
    everything, _ = enumerate_within(problem, options=space)
    filtered = everything.take(np.flatnonzero(dominance_filter(problem, everything)))
    counts: dict = {}
    direct, complete = enumerate_within(
        problem, options=space, recompute=distinct_recompute_modes(problem),
        overlap_recompute=distinct_recompute_modes(problem, ep_overlap=True), counts=counts)
    assert complete and counts["listed"] == len(everything) > len(direct)
    assert (filtered.ep_comm_overlap == 1).any() and (filtered.recompute[filtered.ep_comm_overlap == 1] == 0).all()
    for name in CandidateSet.__dataclass_fields__:
        assert np.array_equal(getattr(direct, name), getattr(filtered, name)), name


def test_dispatchers_of_one_gpu_groups_price_the_same():
    """The duplicate removed from the space: with ep = etp = 1 every dispatcher is free."""
    from planner.llm.plan import Plan, check_plan

    problem = small_problem("all", n=8)
    prices = {d: evaluate(problem, Plan(tp=2, sp=True, dp=4, zero_stage=1, dispatcher=d)).step_time_s
              for d in ("alltoall", "allgather")}
    assert len(set(prices.values())) == 1
    # flex needs an EP group (Megatron-Core), so it is not even a plan at ep = 1
    assert any("flex needs ep > 1" in e for e in check_plan(Plan(tp=2, sp=True, dp=4, dispatcher="flex"), problem))


def test_enumerated_moe_plans_are_valid():
    from planner.llm.plan import check_plan

    problem = small_problem("prefix2", n=16)
    candidates, _ = enumerate_within(problem, options=SpaceOptions())
    rng = np.random.default_rng(3)
    for i in rng.choice(len(candidates), size=200, replace=False):
        plan = candidates.plan(int(i))
        plan = plan.model_copy(update={"stage_layers": aligned_layers(problem.model, plan.pp, plan.virtual_stages)})
        assert check_plan(plan, problem) == [], plan.summary()
    assert {int(x) for x in np.unique(candidates.ep)} == {1, 2, 4, 8}
    assert set(np.unique(candidates.dispatcher).tolist()) == {0, 1, 2}
    assert candidates.ep_comm_overlap.any()


def test_ep_and_etp_constraints_are_respected():
    problem = small_problem("all", n=8, constraints=Constraints(ep=DegreeBound(min=2, max=4), etp=DegreeBound(fixed=1)))
    candidates, _ = enumerate_within(problem, options=SpaceOptions(max_virtual_stages=1, max_micro_batch_size=1))
    assert set(np.unique(candidates.ep).tolist()) == {2, 4}
    assert set(np.unique(candidates.etp).tolist()) == {1}
    result = SOLVERS["cpsat"].solve(problem, SolveOptions(time_limit_s=20))
    assert result.status == "OPTIMAL" and result.plan.ep in (2, 4) and result.plan.etp == 1


def test_megatron_rules_follow_the_moe_guidance():
    """ETP 1, EP inside the NVLink domain when that fits, flex once the EP group crosses nodes,
    EP overlap where Megatron allows it; the stages are the balanced aligned split."""
    from solvers.heuristics import megatron_rules

    for problem in (mixtral_64(), small_problem("prefix2", n=16)):
        plan = megatron_rules(problem)
        assert plan is not None
        node = problem.cluster.tier_size(0)
        assert plan.etp == 1
        assert plan.dispatcher == ("alltoall" if plan.ep * plan.etp <= node else "flex")
        mtp = problem.model.mtp_layers
        mtp_ok = mtp == 0 or (mtp == 1 and plan.pp > 1)  # Megatron-Core's MTP rule for the overlap
        if plan.ep > 1 and plan.recompute != "full" and (plan.pp == 1 or plan.virtual_stages > 1) and mtp_ok:
            assert plan.ep_comm_overlap
        result = SOLVERS["megatron-rules"].solve(problem, SolveOptions())
        assert in_aligned_space(problem, result.plan)


# -- shipped presets and the command line ---------------------------------------------------------


def mixtral_64() -> Problem:
    """Mixtral 8x7B on 64 H100 (shipped presets), 1024 x 4096 tokens, fp8."""
    return Problem(model=load_model("mixtral-8x7b"), cluster=load_cluster("dgx-h100", num_devices=64),
                   task=TrainingTask(global_batch_size=1024, seq_len=4096, precision="fp8"))


def shipped_moe_tasks() -> list:
    from .conftest import PROBLEMS

    names = ["qwen3-30b-a3b-16xh100", "deepseek-v3-1024xh100"]
    return [pytest.param(name, marks=pytest.mark.skipif(not (PROBLEMS / "tasks" / f"{name}.yaml").exists(),
                                                        reason="task not shipped")) for name in names]


def check_optimal_quickly(problem: Problem, limit_s: float) -> None:
    result = SOLVERS["cpsat"].solve(problem, SolveOptions(time_limit_s=30))
    assert result.status == "OPTIMAL"
    assert result.wall_time_s < limit_s
    assert result.plan.ep > 1
    priced = evaluate(problem, result.plan)
    assert priced.fits
    assert abs(priced.step_time_s - result.objective_s) <= result.stats["rounding_bound_s"] + 1e-12


def test_mixtral_on_64_h100_is_solved_to_optimality_quickly():
    check_optimal_quickly(mixtral_64(), 15)


@pytest.mark.parametrize("name", shipped_moe_tasks())
def test_shipped_moe_tasks_are_solved_to_optimality(name):
    from planner.llm.problem import load_problem

    from .conftest import PROBLEMS

    check_optimal_quickly(load_problem(PROBLEMS / "tasks" / f"{name}.yaml"), 25)


def test_solve_and_compare_take_moe_tasks(tmp_path, capsys):
    from planner.cli import main

    task = tmp_path / "task.yaml"
    task.write_text("model: mixtral-8x7b\ncluster: dgx-h100\nnum_devices: 16\n"
                    "training: {global_batch_size: 64, seq_len: 4096, precision: fp8}\n")
    assert main(["solve", str(task), "--time-limit", "20", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"status": "OPTIMAL"' in out and '"ep":' in out
    assert main(["compare", str(task), "--time-limit", "20"]) == 0
    assert "cpsat" in capsys.readouterr().out


def test_a_pattern_the_search_cannot_cut_is_bad_input(tmp_path, capsys):
    from planner.cli import main

    pattern = [0, 1, 1, 0, 1, 0, 1, 1] * 4  # MoE layers not a dense prefix then every P-th
    task = tmp_path / "task.yaml"
    task.write_text("model: {preset: mixtral-8x7b, ffn_hidden_size: 14336, moe: {num_experts: 8, top_k: 2, "
                    f"ffn_hidden_size: 14336, layer_pattern: {pattern}}}}}\n"
                    "cluster: dgx-h100\nnum_devices: 16\ntraining: {global_batch_size: 64, seq_len: 4096}\n")
    for command in ("solve", "compare"):
        assert main([command, str(task)]) == 2
        err = capsys.readouterr().err
        assert "model.moe.layer_pattern" in err and str(task) in err
    with pytest.raises(InputError, match="layer_pattern"):
        alignment(tiny_moe(num_layers=4, kind="all").model_copy(
            update={"moe": tiny_moe(num_layers=4).moe.model_copy(update={"layer_pattern": [1, 1, 0, 1]})}))
    # A trailing dense layer breaks the shape too; a leading MoE layer with period 2 does not.
    assert alignment(tiny_moe(num_layers=6, kind="pattern")) == Alignment(period=2, deficit=0, moe=True)
