"""The serving search (solvers.serving, `planner solve` / `compare` on inference tasks): equal to
a brute force written here on random small instances, never worse than the baselines, monotone
in the TPOT target, its infeasibility messages, the Pareto front, and the CLI paths."""

import itertools
import json
import math
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.cli import main
from planner.cli.common import load_task
from planner.serving.cost import evaluate
from planner.serving.plan import ServingPlan, check_plan
from solvers import serving as search
from solvers.serving import baseline_plans, pareto_front, solve_serving

from .conftest import PROBLEMS

TASK = str(PROBLEMS / "tasks" / "llama3-70b-8xh100-serving.yaml")


def write_task(tmp_path: Path, *, model="llama3-8b", devices=4, input_tokens=512, output_tokens=128,
               concurrency: int | None = 16, precision="bf16", kv="bf16", engine="{name: vllm}",
               ttft: str | None = None, tpot: str | None = None, name="task.yaml") -> Path:
    targets = {k: v for k, v in (("ttft_s", ttft), ("tpot_s", tpot)) if v is not None}
    lines = [f"model: {model}", "cluster: dgx-h100", f"num_devices: {devices}", "inference:",
             f"  requests: {{input_tokens: {input_tokens}, output_tokens: {output_tokens}}}",
             f"  weight_precision: {precision}", f"  kv_cache_dtype: {kv}", f"  engine: {engine}"]
    if concurrency is not None:
        lines.append(f"  concurrency: {concurrency}")
    if targets:
        lines.append("  targets: {" + ", ".join(f"{k}: {v}" for k, v in targets.items()) + "}")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def brute_force(problem) -> float | None:
    """The best output tokens/s per GPU over every (tp, pp, dp, max_num_seqs) with tp x pp x dp =
    the GPUs, tp within a node, a valid plan, and 1 <= max_num_seqs <= ceil(concurrency / dp): each
    priced by the cost model and checked against memory and the targets here."""
    devices = problem.cluster.num_devices
    node = problem.cluster.tier_size(0)
    targets = problem.task.targets
    best = None
    for tp in range(1, devices + 1):
        for pp in range(1, devices + 1):
            if devices % (tp * pp) or tp > node:
                continue
            dp = devices // (tp * pp)
            top = math.ceil(problem.task.concurrency / dp)
            for seqs in range(1, top + 1):
                plan = ServingPlan(family="serving", tp=tp, pp=pp, dp=dp, max_num_seqs=seqs)
                if check_plan(plan, problem):
                    continue
                e = evaluate(problem, plan)
                if not e.fits:
                    continue
                if targets.ttft_s is not None and e.ttft_max_s > targets.ttft_s:
                    continue
                if targets.tpot_s is not None and e.tpot_s > targets.tpot_s:
                    continue
                best = max(best or 0.0, e.output_tokens_per_s_per_gpu)
    return best


def random_instances(tmp_path: Path, count: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        model = rng.choice(["llama3-8b", "llama3-8b", "llama3-70b"])
        out.append(write_task(
            tmp_path, model=model, devices=rng.choice([1, 2, 4, 8] if model == "llama3-8b" else [4, 8]),
            input_tokens=rng.choice([128, 512, 2048]), output_tokens=rng.choice([32, 128, 512]),
            concurrency=rng.randint(1, 48), precision=rng.choice(["bf16", "fp8"]), kv=rng.choice(["bf16", "fp8"]),
            engine=rng.choice(["{name: vllm}", "{name: tensorrt-llm, batching: static}"]),
            ttft=rng.choice([None, "300ms", "2s"]), tpot=rng.choice([None, "15ms", "30ms", "60ms"]),
            name=f"task{i}.yaml"))
    return out


def test_the_solver_equals_a_brute_force_on_random_instances(tmp_path):
    solved = 0
    for path in random_instances(tmp_path, 10, seed=10):
        problem = load_task(path)
        result = solve_serving(problem)
        expected = brute_force(problem)
        if expected is None:
            assert result.status == "INFEASIBLE" and result.plan is None and result.infeasibility, path.read_text()
            continue
        solved += 1
        assert result.status == "OPTIMAL", path.read_text()
        assert result.objective_tokens_per_s_per_gpu == pytest.approx(expected, rel=1e-12), path.read_text()
        assert result.best_bound_tokens_per_s_per_gpu == result.objective_tokens_per_s_per_gpu and result.gap == 0
        assert 0 < result.evaluated <= result.space_size  # the rest bounded below the optimum
        # the plan, priced again from scratch, gives the objective
        again = evaluate(problem, result.plan)
        assert again.output_tokens_per_s_per_gpu == result.objective_tokens_per_s_per_gpu
    assert solved >= 4


def test_never_worse_than_the_baselines(tmp_path):
    for path in random_instances(tmp_path, 8, seed=3):
        problem = load_task(path)
        result = solve_serving(problem)
        for _, plan, _ in baseline_plans(problem):
            if plan is None:
                continue
            e = evaluate(problem, plan)
            if not search.violations(problem, e):
                assert result.objective_tokens_per_s_per_gpu >= e.output_tokens_per_s_per_gpu * (1 - 1e-12)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tight_ms=st.integers(5, 60), extra_ms=st.integers(0, 60), concurrency=st.integers(1, 40),
       devices=st.sampled_from([1, 2, 4]), input_tokens=st.sampled_from([128, 1024]))
def test_a_looser_tpot_target_never_lowers_the_optimum(tmp_path, tight_ms, extra_ms, concurrency, devices,
                                                        input_tokens):
    common = {"devices": devices, "concurrency": concurrency, "input_tokens": input_tokens}
    tight = solve_serving(load_task(write_task(tmp_path, tpot=f"{tight_ms}ms", name="a.yaml", **common)))
    loose = solve_serving(load_task(write_task(tmp_path, tpot=f"{tight_ms + extra_ms}ms", name="b.yaml", **common)))
    if tight.plan is not None:
        assert loose.objective_tokens_per_s_per_gpu >= tight.objective_tokens_per_s_per_gpu
    if loose.plan is None:
        assert tight.plan is None


def test_the_batch_is_enumerated_because_throughput_is_not_monotone_in_it():
    """The docstring's claim: on the preset, throughput per GPU is not monotone in max_num_seqs
    for some layout (PP micro-batches of ceil(B / pp) make steps), so no bisection is used."""
    problem = load_task(TASK)
    rates = [evaluate(problem, ServingPlan(family="serving", tp=2, pp=4, dp=1, max_num_seqs=b))
             .output_tokens_per_s_per_gpu for b in range(4, 129)]
    assert any(b < a for a, b in itertools.pairwise(rates))


def test_memory_infeasibility_names_the_constraint_and_the_excess(tmp_path):
    result = solve_serving(load_task(write_task(tmp_path, model="llama3-70b", devices=1, concurrency=4)))
    assert result.status == "INFEASIBLE" and result.plan is None
    assert result.infeasibility.startswith("memory: not one sequence per pipeline stage fits")
    assert "over by" in result.infeasibility and "TP1 PP1" in result.infeasibility


def test_an_unreachable_tpot_target_says_by_how_much(tmp_path):
    result = solve_serving(load_task(write_task(tmp_path, tpot="1ms")))
    assert result.status == "INFEASIBLE"
    assert result.infeasibility.startswith("tpot: the 1.00 ms TPOT target is unreachable")
    assert "over by" in result.infeasibility and "sequences per replica" in result.infeasibility


def test_an_unreachable_ttft_target_says_by_how_much(tmp_path):
    result = solve_serving(load_task(write_task(tmp_path, ttft="1ms")))
    assert result.status == "INFEASIBLE" and result.infeasibility.startswith("ttft: the 1.00 ms TTFT target")


def test_the_time_limit_stops_with_the_best_so_far(tmp_path, monkeypatch):
    problem = load_task(write_task(tmp_path, concurrency=32))
    clock = iter(range(10**6))
    monkeypatch.setattr(search.time, "perf_counter", lambda: float(next(clock)))
    result = solve_serving(problem, deadline=4.0)  # stops while the layouts' first batches are priced
    assert result.status == "FEASIBLE" and result.plan is not None and result.best_bound_tokens_per_s_per_gpu is None
    assert 0 < result.evaluated < result.space_size
    assert f"of the {result.space_size:,} configurations" in result.notes[0] and "not proven optimal" in result.notes[0]


def test_the_pareto_front_has_no_dominated_point():
    problem = load_task(TASK)
    result = solve_serving(problem, pareto=True)
    front = result.pareto
    assert len(front) >= 3
    for a in front:
        for b in front:
            if a is not b:
                dominates = (b.estimate.tpot_s <= a.estimate.tpot_s and b.throughput_per_gpu >= a.throughput_per_gpu)
                assert not dominates
    # the optimum under the TPOT target is on (or below) the front, and the front's TPOTs rise
    best = result.objective_tokens_per_s_per_gpu
    assert max(p.throughput_per_gpu for p in front if p.estimate.tpot_s <= 0.05) == pytest.approx(best)
    assert [p.estimate.tpot_s for p in front] == sorted(p.estimate.tpot_s for p in front)
    assert pareto_front(front) == front


def test_solve_cli_proves_and_saves_a_plan_estimate_reprices(tmp_path, capsys):
    out_plan = tmp_path / "plan.yaml"
    assert main(["solve", TASK, "-o", str(out_plan)]) == 0
    text = capsys.readouterr().out
    assert "solver serving-exhaustive: OPTIMAL" in text and "gap 0.00%" in text
    assert "search: 10 layouts (tp x pp x dp), 752 configurations with max_num_seqs, " in text
    assert " priced by the cost model, the rest bounded below the optimum" in text
    assert "(target 50.00 ms: met)" in text and f"plan written to {out_plan}" in text
    assert main(["solve", TASK, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "OPTIMAL" and data["gap"] == 0 and data["space"]["configurations"] == 752
    assert data["plan"]["family"] == "serving" and data["plan"]["provenance"]["status"] == "optimal"
    assert main(["estimate", TASK, "--plan", str(out_plan), "--json"]) == 0
    priced = json.loads(capsys.readouterr().out)
    assert priced["output_tokens_per_s_per_gpu"] == data["objective_tokens_per_s_per_gpu"]
    assert priced["output_tokens_per_s_per_gpu"] == data["plan"]["provenance"]["objective_tokens_per_s_per_gpu"]
    assert priced["targets"]["tpot_met"] and priced["targets"]["ttft_met"]


def test_solve_pareto_cli(capsys):
    assert main(["solve", TASK, "--pareto"]) == 0
    text = capsys.readouterr().out
    assert "Pareto front: output tokens/s per GPU against TPOT" in text and "meets TPOT" in text
    assert main(["solve", TASK, "--pareto", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    points = [(p["tpot_s"], p["output_tokens_per_s_per_gpu"]) for p in data["pareto"]]
    assert len(points) >= 3 and points == sorted(points)
    assert all(p["tpot_target_met"] == (p["tpot_s"] <= 0.05) for p in data["pareto"])


def test_solve_cli_infeasible_and_out_of_time(tmp_path, capsys):
    assert main(["solve", str(write_task(tmp_path, tpot="1ms"))]) == 3
    assert "infeasible: tpot: the 1.00 ms TPOT target is unreachable" in capsys.readouterr().out
    assert main(["solve", str(write_task(tmp_path, tpot="1ms")), "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["status"] == "INFEASIBLE"
    assert main(["solve", TASK, "--time-limit", "0.000001"]) == 3
    out = capsys.readouterr().out
    assert "UNKNOWN" in out and "the time limit was reached after pricing 0 of the 752 configurations" in out


def test_compare_cli_shows_the_baselines(capsys):
    assert main(["compare", TASK]) == 0
    text = capsys.readouterr().out
    for needle in ("serving-exhaustive", "tp-per-node", "smallest-tp", "TP8 PP1 DP1", "TP2 PP1 DP4", "vs best",
                   "misses tpot", "+0.0%"):
        assert needle in text, needle
    assert main(["compare", TASK, "--json", "--plan", str(PROBLEMS / "plans" / "llama3-70b-vllm-tp4.yaml")]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["method"] for r in rows][:3] == ["serving-exhaustive", "tp-per-node", "smallest-tp"]
    best = rows[0]["output_tokens_per_s_per_gpu"]
    assert rows[0]["vs_best"] == 0
    for r in rows[1:]:
        if r["feasible"]:
            assert r["output_tokens_per_s_per_gpu"] <= best and r["vs_best"] <= 0
    assert rows[-1]["status"] == "GIVEN" and rows[-1]["plan"]["tp"] == 4


@pytest.mark.parametrize(("argv", "says"), [
    (["solve", "llama3-8b-8xh100", "--pareto"], "--pareto: the Pareto front"),
    (["solve", TASK, "--solver", "greedy"], "--solver: 'greedy' is not a serving solver"),
    (["solve", TASK, "--export", "megatron"], "a serving plan exports with planner export"),
    (["compare", TASK, "--solvers", "greedy"], "--solvers: 'greedy' is not a serving solver"),
])
def test_bad_flags_exit_2(argv, says, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
