"""`planner solve` and `planner compare` on shipped problems; plans on disk."""

import json

import pytest

from planner.cli import main
from planner.llm.plan import Plan, Provenance
from planner.llm.plan_io import FORMAT_VERSION, load_plan, save_plan
from planner.llm.problem import load_problem

from .conftest import PROBLEMS

LLAMA8 = str(PROBLEMS / "tasks" / "llama3-8b-8xh100.yaml")


def test_solve_proves_optimality_and_writes_a_plan(tmp_path, capsys):
    out = tmp_path / "plan.yaml"
    assert main(["solve", LLAMA8, "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "solver cpsat: OPTIMAL" in text and "gap 0.00%" in text and "best bound" in text
    plan = load_plan(out)
    problem = load_problem(LLAMA8)
    assert plan.provenance.problem_hash == problem.hash
    assert plan.provenance.status == "OPTIMAL"
    # estimate reads it back and prices it to the solver's objective
    assert main(["estimate", LLAMA8, "--plan", str(out), "--json"]) == 0
    priced = json.loads(capsys.readouterr().out)
    assert priced["step_time_s"] == pytest.approx(plan.provenance.objective_s, rel=1e-6)


def test_plan_for_another_problem_is_refused(tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["solve", LLAMA8, "-o", str(out), "--json"]) == 0
    capsys.readouterr()
    other = str(PROBLEMS / "tasks" / "llama3-70b-64xh100.yaml")
    assert main(["estimate", other, "--plan", str(out)]) == 2
    assert "was made for problem" in capsys.readouterr().err


def test_plan_files_round_trip_and_carry_versions(tmp_path):
    plan = Plan(tp=2, sp=True, pp=2, dp=2, stage_layers=[3, 5], recompute="full", recompute_num_layers=[1, 0],
                provenance=Provenance(solver="cpsat", status="OPTIMAL", objective_s=1.5, problem_hash="abc"))
    for name in ("p.yaml", "p.json"):
        path = save_plan(plan, tmp_path / name)
        text = path.read_text()
        assert "format_version" in text and "planner_version" in text
        assert load_plan(path) == plan


def test_newer_plan_format_is_rejected(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(f"format_version: {FORMAT_VERSION + 1}\ntp: 1\n")
    from planner.core.errors import InputError

    with pytest.raises(InputError, match="format_version"):
        load_plan(path)


def test_solve_json_reports_the_proof(capsys):
    assert main(["solve", LLAMA8, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "OPTIMAL"
    assert data["gap"] == 0.0
    assert data["objective_s"] == pytest.approx(data["estimate"]["step_time_s"], rel=1e-6)
    assert data["plan"]["provenance"]["problem_hash"]


def test_infeasible_problem_exit_code_and_message(capsys):
    code = main(["solve", str(PROBLEMS / "catalogue" / "too-big.yaml"), "--max-vpp", "2", "--max-mbs", "4"])
    out = capsys.readouterr().out
    assert code == 3
    assert "INFEASIBLE" in out and "no plan fits in memory" in out and "over by" in out


def test_compare_shows_every_method_and_the_published_plan(capsys):
    plan = str(PROBLEMS / "plans" / "llama3-70b-nemo.yaml")
    task = str(PROBLEMS / "tasks" / "llama3-70b-64xh100.yaml")
    assert main(["compare", task, "--plan", plan, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    methods = [r["method"] for r in rows]
    assert methods[:4] == ["cpsat", "megatron-rules", "fsdp-only", "greedy"]
    assert methods[4].startswith("plan ")
    best = min(r["step_time_s"] for r in rows if r["step_time_s"] is not None and r["fits"])
    assert rows[0]["step_time_s"] == pytest.approx(best)
    for r in rows[1:]:
        if r["step_time_s"] is not None and r["fits"]:
            assert r["gap_to_best"] >= -1e-9


def test_short_time_limit_returns_a_plan_with_a_gap(capsys):
    task = str(PROBLEMS / "tasks" / "llama3-405b-16384xh100.yaml")
    code = main(["solve", task, "--time-limit", "3", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["status"] in ("FEASIBLE", "OPTIMAL")
    assert data["best_bound_s"] <= data["objective_s"] + 1e-9
    assert data["gap"] is not None


def test_unknown_solver_is_an_error(capsys):
    assert main(["solve", LLAMA8, "--solver", "magic"]) == 2
    assert "unknown solver 'magic'" in capsys.readouterr().err
