"""The global batch as a decision: a task may give a range (min, max, multiple_of) of batches,
in sequences or tokens; the solver then maximizes tokens per second.

Specification:
- the range is read from the task (sequences or tokens), and bad ranges are refused naming the
  field;
- a plan may carry its own global batch; evaluate, check_plan and the exports use it;
- the premise of the search's batch choice holds in the cost model: for one plan, the step time
  is m T + c with c >= 0 (so the time per sequence falls with the micro-batch count m), and the
  memory stops changing from `memory_threshold` micro-batches on;
- CP-SAT, searching only the batches of `batch_choices`, equals the exhaustive oracle, which
  prices every batch of the range, on random small dense and MoE instances;
- a fixed batch searches exactly as before (one batch, weight 1).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from planner.cli import main
from planner.core.errors import InputError
from planner.llm.cost.step import evaluate
from planner.llm.plan import Plan, check_plan
from planner.llm.problem import Problem, load_cluster, load_problem
from planner.llm.space import SpaceOptions, batch_choices, enumerate_within, memory_threshold
from planner.llm.task import BatchRange, Constraints, Framework, TrainingTask
from solvers import SOLVERS, SolveOptions

from .conftest import PROBLEMS, small_model
from .test_moe_search import instances as fixed_moe_instances

SHIPPED = PROBLEMS / "tasks" / "gpt3-175b-1024xa100-batch-range.yaml"


def free_task(**overrides) -> TrainingTask:
    data = {"global_batch_size": {"min": 24, "max": 64, "multiple_of": 8}, "seq_len": 1024}
    data.update(overrides)
    return TrainingTask.model_validate(data)


# -- the task ---------------------------------------------------------------------------------


def test_a_range_of_sequences_allows_its_multiples():
    task = free_task(global_batch_size={"min": 20, "max": 70, "multiple_of": 8})
    assert task.batch_range == (24, 64, 8)
    assert task.batch_is_free and task.num_sequences == 64  # the reference batch: the largest
    assert [b for b in range(0, 100) if task.admits_batch(b)] == [24, 32, 40, 48, 56, 64]
    assert task.batch_text == "24..64 (multiples of 8)"


def test_a_range_of_tokens_is_read_in_whole_sequences():
    # multiples of 2**20 tokens with 2048-token sequences: multiples of 512 sequences
    task = TrainingTask.model_validate({"seq_len": 2048, "global_batch_tokens": {
        "min": 3_000_000, "max": 4_200_000, "multiple_of": 2**20}})
    assert task.batch_range == (1536, 2048, 512)
    # multiple_of defaults to one token: any whole number of sequences
    task = TrainingTask.model_validate({"seq_len": 1000, "global_batch_tokens": {"min": 2500, "max": 5000}})
    assert task.batch_range == (3, 5, 1)


def test_a_fixed_batch_is_unchanged():
    task = TrainingTask(global_batch_size=512, seq_len=2048)
    assert task.batch_range == (512, 512, 512) and not task.batch_is_free
    assert task.model_dump(exclude_none=True)["global_batch_size"] == 512
    # a range of one value is a fixed batch
    assert not free_task(global_batch_size={"min": 60, "max": 70, "multiple_of": 32}).batch_is_free


@pytest.mark.parametrize(("value", "message"), [
    ({"min": 64, "max": 32}, "min (64) is larger than max (32)"),
    ({"min": 10, "max": 11, "multiple_of": 24}, "no multiple of 24 sequences lies within 10..11"),
    ({"min": 0, "max": 8}, "greater than 0"),
    ({"min": 8}, "Field required"),
    ({"min": 8, "max": 16, "step": 2}, "unknown field"),
    ({"min": 8.5, "max": 16}, "valid integer"),
    ({"min": True, "max": 16}, "valid integer"),
    ("64", "valid integer"),
])
def test_bad_ranges_are_refused_naming_the_field(tmp_path, capsys, value, message):
    path = tmp_path / "task.yaml"
    path.write_text(json.dumps({"model": "llama3-8b", "cluster": "dgx-h100", "num_devices": 8,
                                "training": {"global_batch_size": value, "seq_len": 8192}}))
    assert main(["solve", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: training" in err and "global_batch_size" in err and message in err
    assert "Traceback" not in err


def test_a_token_range_without_a_whole_sequence_is_refused(tmp_path, capsys):
    path = tmp_path / "task.yaml"
    path.write_text(json.dumps({"model": "llama3-8b", "cluster": "dgx-h100", "num_devices": 8, "training": {
        "global_batch_tokens": {"min": 1000, "max": 8000}, "seq_len": 8192}}))
    assert main(["estimate", str(path)]) == 2
    assert "global_batch_tokens: no multiple of 1 tokens (8192 per sequence) lies within 1000..8000" in \
        capsys.readouterr().err


# -- plans that carry their batch ---------------------------------------------------------------


def small_problem(task: TrainingTask, n: int = 8, hbm_gb: float = 80.0, layers: int = 8) -> Problem:
    base = load_cluster("dgx-h100", num_devices=n)
    cluster = base.model_copy(update={"device": base.device.model_copy(update={"hbm_bytes": hbm_gb * 1e9})})
    return Problem(model=small_model(num_layers=layers), cluster=cluster, task=task)


def test_a_plan_runs_at_its_own_batch():
    problem = small_problem(free_task())
    plan = Plan(dp=8, micro_batch_size=1)
    at_reference = evaluate(problem, plan)
    at_40 = evaluate(problem, plan.model_copy(update={"global_batch_size": 40}))
    assert at_reference.num_micro_batches == 8 and at_40.num_micro_batches == 5
    assert at_40.tokens_per_s == pytest.approx(40 * 1024 / at_40.step_time_s)
    assert plan.model_copy(update={"global_batch_size": 40}).batch_weight(problem.task) == 64 / 40


def test_a_batch_the_task_does_not_allow_is_an_error():
    problem = small_problem(free_task())
    errors = check_plan(Plan(dp=8, global_batch_size=36), problem)
    assert any("global_batch_size (36 sequences) is not one the task allows (a multiple of 8 within 24..64)" in e
               for e in errors)
    fixed = small_problem(TrainingTask(global_batch_size=64, seq_len=1024))
    assert any("is not one the task allows (64)" in e for e in check_plan(Plan(dp=8, global_batch_size=32), fixed))
    assert check_plan(Plan(dp=8, global_batch_size=64), fixed) == []
    anything = small_problem(free_task(global_batch_size={"min": 24, "max": 64}))
    assert any("(16 sequences) is not one the task allows (24..64)" in e
               for e in check_plan(Plan(dp=8, global_batch_size=16), anything))


def test_a_plan_file_with_a_bad_batch_is_refused_naming_the_file(tmp_path, capsys):
    task = str(SHIPPED)
    for value, message in ((1000, "global_batch_size (1000 sequences) is not one the task allows (1152..1536)"),
                           ("true", "global_batch_size: Input should be a valid integer"),
                           (0, "global_batch_size: Input should be greater than 0")):
        path = tmp_path / "plan.yaml"
        path.write_text(f"tp: 8\npp: 8\ndp: 16\nglobal_batch_size: {value}\n")
        assert main(["estimate", task, "--plan", str(path)]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and message in err and "Traceback" not in err


# -- the premise of the batch choice ------------------------------------------------------------


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(pp=st.sampled_from([1, 2, 4]), vs=st.sampled_from([1, 2]), recompute=st.sampled_from(["none", "full"]),
       zero=st.sampled_from([0, 1, 3]), m=st.integers(1, 12))
def test_step_time_is_affine_in_micro_batches_and_memory_settles(pp, vs, recompute, zero, m):
    assume(not (vs > 1 and pp == 1))
    dp = 8 // pp
    unit = dp * (pp if vs > 1 else 1)
    task = TrainingTask(global_batch_size=BatchRange(min=unit, max=64 * unit, multiple_of=unit), seq_len=1024)
    problem = small_problem(task, n=8)
    plan = Plan(pp=pp, dp=dp, schedule="interleaved" if vs > 1 else "1f1b", virtual_stages=vs,
                recompute=recompute, zero_stage=zero)

    def priced(micro_batches):
        return evaluate(problem, plan.model_copy(update={"global_batch_size": micro_batches * dp}))

    k = pp if vs > 1 else 1
    a, b, c = priced(k * m), priced(k * (m + 1)), priced(k * (m + 2))
    slope = b.step_time_s - a.step_time_s
    assert c.step_time_s - b.step_time_s == pytest.approx(slope, rel=1e-9)
    assert a.step_time_s - k * m * slope / k >= -1e-12  # the intercept c >= 0
    assert a.step_time_s / (k * m) >= b.step_time_s / (k * (m + 1)) - 1e-15  # time per sequence falls
    assert a.peak_memory_bytes <= b.peak_memory_bytes
    if k * m >= memory_threshold(pp, vs):
        assert a.peak_memory_bytes == b.peak_memory_bytes


def test_batch_choices():
    task = free_task(global_batch_size={"min": 8, "max": 100, "multiple_of": 4})  # 8, 12, ..., 100
    # the largest multiple of dp x mbs (x pp interleaved), then the smaller ones below the threshold
    assert batch_choices(task, dp=4, mbs=1, pp=1, vs=1) == [100]
    assert batch_choices(task, dp=4, mbs=1, pp=4, vs=1) == [100, 8, 12]  # m = 2, 3 < 4
    assert batch_choices(task, dp=2, mbs=3, pp=2, vs=2) == [96, 12]  # m = 2 (x2 chunks) < 3
    assert batch_choices(task, dp=4, mbs=1, pp=4, vs=1, every=True) == [100, *range(8, 100, 4)]
    assert batch_choices(task, dp=64, mbs=2, pp=1, vs=1) == []
    fixed = TrainingTask(global_batch_size=96, seq_len=1024)
    assert batch_choices(fixed, dp=4, mbs=2, pp=8, vs=2) == []  # 12 micro-batches, not a multiple of 8
    assert batch_choices(fixed, dp=4, mbs=2, pp=4, vs=1) == [0]  # 0: the task's batch


def test_a_fixed_batch_enumerates_exactly_as_before():
    problem = small_problem(TrainingTask(global_batch_size=64, seq_len=1024))
    candidates, complete = enumerate_within(problem, options=SpaceOptions())
    assert complete and len(candidates) and not candidates.num_sequences.any()
    assert np.all(candidates.batch_weight(problem.task) == 1.0)


# -- exactness ----------------------------------------------------------------------------------


@st.composite
def instances(draw):
    n = draw(st.sampled_from([1, 2, 4, 8, 8, 16]))
    heads = draw(st.sampled_from([8, 16]))
    hidden = draw(st.sampled_from([1024, 2048]))
    model = small_model(num_layers=draw(st.integers(2, 12)), hidden_size=hidden, num_heads=heads,
                        num_kv_heads=draw(st.sampled_from([1, 2, heads])), ffn_hidden_size=3 * hidden,
                        vocab_size=8000, tied_embeddings=draw(st.booleans()))
    base = load_cluster("dgx-h100", num_devices=n)
    cluster = base.model_copy(update={
        "device": base.device.model_copy(update={"hbm_bytes": draw(st.sampled_from([1.0, 1.5, 2.0, 4.0])) * 1e9}),
        "tiers": [base.tiers[0].model_copy(update={"size": draw(st.sampled_from([4, 8]))}), base.tiers[1]],
    })
    high = draw(st.integers(n + 3, 4 * n + 8))
    low = draw(st.integers(1, high - 3))
    task = TrainingTask(
        global_batch_size=BatchRange(min=low, max=high, multiple_of=draw(st.sampled_from([1, 1, 2, 3]))),
        seq_len=draw(st.sampled_from([512, 1024])),
        framework=Framework(attention="flash", framework_overhead_bytes=0.1 * 2**30,
                            overlap_grad_reduce=draw(st.booleans())),
        constraints=Constraints(recompute=draw(st.sampled_from([["none", "full"], ["full"], ["none"]])),
                                zero_stages=draw(st.sampled_from([[0, 1, 2, 3], [0, 1], [3]]))),
    )
    space = SpaceOptions(max_virtual_stages=2, max_micro_batch_size=2, axis_orders="megatron")
    return Problem(model=model, cluster=cluster, task=task), SolveOptions(space=space, max_evaluations=300_000)


def solved_as_the_oracle(problem, options):
    """CP-SAT against the oracle that prices every batch of the range: the same status and
    objective, a plan at a batch the task allows that fits and whose step time per reference
    batch is the objective. (oracle, exact, the plan priced, rounding bound), or None when both
    say infeasible."""
    oracle = SOLVERS["exhaustive"].solve(problem, options)
    assume(oracle.status != "UNKNOWN")
    exact = SOLVERS["cpsat"].solve(problem, options)
    if oracle.status == "INFEASIBLE":
        assert exact.status == "INFEASIBLE"
        return None
    assert exact.status == "OPTIMAL", exact.notes
    rounding = exact.stats.get("rounding_bound_s", 0.0) + 1e-12
    assert exact.objective_s == pytest.approx(oracle.objective_s, rel=1e-9, abs=rounding)
    assert problem.task.admits_batch(exact.plan.sequences(problem.task))
    # the objective is the plan's step time per reference batch
    priced = evaluate(problem, exact.plan)
    assert priced.fits
    assert priced.step_time_s * exact.plan.batch_weight(problem.task) == pytest.approx(exact.objective_s, abs=rounding)
    return oracle, exact, priced, rounding


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(instance=instances())
def test_cpsat_equals_the_oracle_that_prices_every_batch(instance):
    problem, options = instance
    found = solved_as_the_oracle(problem, options)
    if found is None:
        return
    oracle, exact, priced, rounding = found
    task = problem.task
    if task.batch_is_free:  # the batch chosen is said, not left implicit (one value: a fixed batch)
        assert task.admits_batch(exact.plan.global_batch_size)
    assert priced.tokens_per_s == pytest.approx(task.tokens_per_step / exact.objective_s,
                                                rel=1e-9 + 2 * rounding / exact.objective_s)
    assert exact.stats["reference_batch"] == task.num_sequences
    # the rules of thumb run at batches of the range too, and are never better than the optimum
    for name in ("megatron-rules", "fsdp-only", "greedy"):
        result = SOLVERS[name].solve(problem, options)
        if result.plan is None or not result.breakdown.fits:
            continue
        assert task.admits_batch(result.plan.sequences(task)), name
        assert result.objective_s == pytest.approx(
            result.breakdown.step_time_s * result.plan.batch_weight(task), rel=1e-12), name
        assert result.objective_s >= oracle.objective_s * (1 - 1e-12), name


def test_the_rules_of_thumb_pick_a_batch_of_the_range_their_data_parallelism_divides():
    # 8 GPUs, batches 96..127: the largest (127) is odd; FSDP over 8 GPUs runs at 120
    task = TrainingTask(global_batch_size=BatchRange(min=96, max=127), seq_len=1024)
    problem = small_problem(task, n=8)
    fsdp = SOLVERS["fsdp-only"].solve(problem, SolveOptions())
    assert fsdp.status == "HEURISTIC" and fsdp.plan.global_batch_size == 120
    assert fsdp.objective_s == pytest.approx(fsdp.breakdown.step_time_s * 127 / 120, rel=1e-12)
    rules = SOLVERS["megatron-rules"].solve(problem, SolveOptions())
    assert rules.status == "HEURISTIC" and task.admits_batch(rules.plan.global_batch_size)
    assert rules.plan.global_batch_size % rules.plan.dp == 0


def test_memory_can_make_a_smaller_batch_the_best():
    # Four stages; memory for fewer micro-batches in flight on stage 0 than the pipeline keeps at
    # the largest batch: only batches with fewer micro-batches than stages fit, and the search
    # finds them (the smaller batches of `batch_choices`).
    task = TrainingTask(global_batch_size=BatchRange(min=1, max=64), seq_len=1024,
                        constraints=Constraints(pp={"fixed": 4}, dp={"fixed": 2}, recompute=["none"],
                                                zero_stages=[0], micro_batch_size={"fixed": 1}))
    base = load_cluster("dgx-h100", num_devices=8)
    model = small_model(num_layers=8, vocab_size=1000)
    probe = Problem(model=model, cluster=base, task=task)
    plan = Plan(pp=4, dp=2)
    need = {m: evaluate(probe, plan.model_copy(update={"global_batch_size": 2 * m})).peak_memory_bytes
            for m in (1, 2, 3, 4, 5)}
    assert need[1] < need[2] < need[3] < need[4] == need[5]
    capacity = (need[2] + need[3]) / 2 / (1 - task.memory_headroom)
    cluster = base.model_copy(update={"device": base.device.model_copy(update={"hbm_bytes": capacity})})
    problem = Problem(model=model, cluster=cluster, task=task)
    options = SolveOptions(space=SpaceOptions(max_virtual_stages=1, axis_orders="megatron"))
    exact = SOLVERS["cpsat"].solve(problem, options)
    oracle = SOLVERS["exhaustive"].solve(problem, options)
    assert exact.status == oracle.status == "OPTIMAL"
    assert exact.plan.global_batch_size == oracle.plan.global_batch_size < 2 * 4  # fewer micro-batches than stages
    assert exact.objective_s == pytest.approx(oracle.objective_s, rel=1e-9)


# -- the commands ---------------------------------------------------------------------------------


def test_solve_chooses_the_batch_and_says_so(tmp_path, capsys):
    out = tmp_path / "plan.yaml"
    path = tmp_path / "task.yaml"
    path.write_text(json.dumps({"model": "llama3-8b", "cluster": "dgx-h100", "num_devices": 8, "training": {
        "global_batch_size": {"min": 96, "max": 128, "multiple_of": 8}, "seq_len": 8192, "precision": "fp8"}}))
    assert main(["solve", str(path), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "solver cpsat: OPTIMAL" in text and "per 128 sequences" in text
    problem = load_problem(path)
    saved = Plan.model_validate({k: v for k, v in __import__("yaml").safe_load(out.read_text()).items()
                                 if k not in ("format_version", "planner_version")})
    assert problem.task.admits_batch(saved.global_batch_size)
    assert f"gbs{saved.global_batch_size}" in text
    # estimate prices the saved plan at its batch; the Megatron export carries it
    assert main(["estimate", str(path), "--plan", str(out), "--json"]) == 0
    priced = json.loads(capsys.readouterr().out)
    assert priced["step_time_s"] * 128 / saved.global_batch_size == pytest.approx(
        saved.provenance.objective_s, rel=1e-6)
    assert main(["export", str(out), "--task", str(path), "--to", "megatron"]) == 0
    assert f"--global-batch-size {saved.global_batch_size}" in capsys.readouterr().out


def test_the_shipped_range_task_reads():
    problem = load_problem(SHIPPED)
    assert problem.task.batch_is_free and problem.task.batch_range == (1152, 1536, 1)
    with pytest.raises(InputError):
        load_problem(PROBLEMS / "tasks" / "no-such-task.yaml")


def test_estimate_prices_a_given_batch_with_gbs(capsys):
    assert main(["estimate", str(SHIPPED), "--tp", "8", "--pp", "8", "--dp", "16", "--gbs", "1280", "--sp",
                 "--recompute", "full", "--zero", "1", "--json"]) == 0
    priced = json.loads(capsys.readouterr().out)
    assert priced["num_micro_batches"] == 80
    assert priced["tokens_per_s"] == pytest.approx(1280 * 2048 / priced["step_time_s"])
    # a batch the task does not allow names the flag and the range
    assert main(["estimate", str(SHIPPED), "--tp", "8", "--pp", "8", "--dp", "16", "--gbs", "1000"]) == 2
    err = capsys.readouterr().err
    assert "--gbs" in err and "(1000 sequences) is not one the task allows (1152..1536)" in err
    # training flag: refused on inference and DLRM tasks, as the other plan flags
    for task in ("llama3-70b-8xh100-serving", "madmax-dlrm-a-zionex128"):
        assert main(["estimate", task, "--gbs", "4"]) == 2
        assert "--gbs" in capsys.readouterr().err


@st.composite
def moe_instances(draw):
    problem, options = draw(fixed_moe_instances())
    batch = problem.task.num_sequences
    high = batch + draw(st.sampled_from([0, 1, 3, batch]))
    task = problem.task.model_copy(update={"global_batch_size": BatchRange(min=max(1, batch // 2), max=high)})
    task = TrainingTask.model_validate(task.model_dump())
    return Problem(model=problem.model, cluster=problem.cluster, task=task), options


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(instance=moe_instances())
def test_cpsat_equals_the_oracle_on_moe_models_with_a_free_batch(instance):
    problem, options = instance
    solved_as_the_oracle(problem, options)


def test_compare_json_carries_each_rows_batch_and_throughput(tmp_path, capsys):
    path = tmp_path / "task.yaml"
    path.write_text(json.dumps({"model": "llama3-8b", "cluster": "dgx-h100", "num_devices": 8, "training": {
        "global_batch_size": {"min": 96, "max": 127}, "seq_len": 8192, "precision": "fp8"}}))
    assert main(["compare", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    priced = [r for r in rows if r["step_time_s"] is not None]
    assert priced
    best = max(r["tokens_per_s"] for r in priced if r["fits"])
    for r in priced:
        assert 96 <= r["global_batch_size"] <= 127
        assert r["tokens_per_s"] == pytest.approx(r["global_batch_size"] * 8192 / r["step_time_s"], rel=1e-9)
        assert r["gap_to_best"] == pytest.approx(best / r["tokens_per_s"] - 1, abs=1e-12)
