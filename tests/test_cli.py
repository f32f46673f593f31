"""The CLI runs on the shipped problems (inside pytest, not a shell script)."""

import json

import pytest

from planner.cli import main

from .conftest import LLM_TASKS, PROBLEMS

TASKS = LLM_TASKS


def test_estimate_prints_breakdown_and_memory(capsys):
    code = main(
        [
            "estimate",
            str(PROBLEMS / "tasks" / "gpt3-175b-1024xa100.yaml"),
            "--plan",
            str(PROBLEMS / "plans" / "gpt3-175b-megatron.yaml"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    for text in ("step time", "MFU / HFU", "where the step time goes", "bubble", "memory per GPU by pipeline stage"):
        assert text in out
    assert "dp    infiniband" in out


def test_estimate_from_flags_json(capsys):
    code = main(["estimate", str(PROBLEMS / "tasks" / "llama3-8b-8xh100.yaml"), "--tp", "2", "--sp", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code in (0, 3)
    assert data["plan"]["tp"] == 2 and data["plan"]["dp"] == 4
    assert data["step_time_s"] == pytest.approx(sum(data["parts_s"].values()))
    assert len(data["stages"]) == 1


def test_estimate_exit_code_3_when_it_does_not_fit(capsys):
    code = main(["estimate", str(PROBLEMS / "tasks" / "llama3-70b-64xh100.yaml"), "--dp", "64"])
    out = capsys.readouterr().out
    assert code == 3
    assert "over by" in out and "try more pipeline stages" in out


@pytest.mark.parametrize("task", TASKS, ids=[t.stem for t in TASKS])
def test_every_shipped_task_loads_and_prices(task, capsys):
    from planner.llm.problem import load_problem

    problem = load_problem(task)
    tp = 8 if problem.model.num_heads % 8 == 0 else 1
    pp = 1
    for candidate in (16, 8, 4, 2, 1):
        if problem.model.num_layers % candidate == 0 and problem.cluster.num_devices % (tp * candidate) == 0:
            pp = candidate
            break
    cp = 1  # context parallelism where the data-parallel degree would exceed the batch
    while (problem.task.num_sequences % (problem.cluster.num_devices // (tp * pp * cp))
           and problem.cluster.num_devices % (tp * pp * cp * 2) == 0):
        cp *= 2
    code = main(["estimate", str(task), "--tp", str(tp), "--pp", str(pp), "--cp", str(cp), "--sp", "--recompute",
                 "full", "--zero", "1"])
    assert code in (0, 3)
    assert "step time" in capsys.readouterr().out


def test_plan_for_another_problem_is_refused(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text("tp: 8\npp: 16\ndp: 8\nprovenance:\n  problem_hash: 0123456789abcdef\n")
    code = main(["estimate", str(PROBLEMS / "tasks" / "gpt3-175b-1024xa100.yaml"), "--plan", str(plan)])
    assert code == 2
    assert "made for problem 0123456789abcdef" in capsys.readouterr().err


def test_help_on_every_command(capsys):
    for command in ("estimate", "validate", "calibrate"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: planner " + command in capsys.readouterr().out


def test_calibrate_reproduces_preset_constants(capsys):
    assert main(["calibrate", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["gemm_fit"]["fraction"] == pytest.approx(0.75, abs=0.005)
    assert data["gemm_fit"]["overhead_us"] == pytest.approx(28.5, abs=0.5)
    assert data["devices"]["H100-SXM5-80GB"]["gemm_fraction_bf16"] == pytest.approx(0.743, abs=0.002)
    a100 = data["allreduce_fits"][0]
    assert a100["efficiency"] == pytest.approx(0.77, abs=0.01)
