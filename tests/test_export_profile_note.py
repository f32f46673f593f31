"""An export to a framework other than the one whose profile priced the plan says so (the
predicted step in the header assumed the task's framework)."""

import dataclasses

import pytest

from planner.cli.common import load_task
from planner.export import export, profile_mismatch
from planner.llm.task import Framework
from solvers import SOLVERS
from solvers.base import SolveOptions

from .conftest import PROBLEMS


@pytest.fixture(scope="module")
def solved():
    problem = load_task(str(PROBLEMS / "tasks" / "llama3-8b-8xh100.yaml"))
    plan = SOLVERS["megatron-rules"].solve(problem, SolveOptions(time_limit_s=10)).plan
    return problem, plan


def with_profile(problem, profile: str):
    task = problem.task.model_copy(update={"framework": Framework(profile=profile)})
    return dataclasses.replace(problem, task=task)


@pytest.mark.parametrize(("profile", "target", "noted"), [
    ("megatron-core@0.16", "megatron", False),
    ("megatron-core@0.16", "megatron-bridge", False),
    ("megatron-core@0.16", "torchtitan", True),
    ("torchtitan", "torchtitan", False),
    ("torchtitan", "megatron", True),
    ("megatron-deepspeed@2022", "deepspeed", False),
    ("megatron-lm@2022", "deepspeed", True),
])
def test_a_mismatched_profile_is_noted(solved, profile, target, noted):
    problem, plan = solved
    problem = with_profile(problem, profile)
    note = profile_mismatch(problem, target)
    assert (note is not None) == noted
    if noted:
        assert profile.split("@")[0] in note and target in note
        result = export(problem, plan, target)
        assert note in result.approximations


def test_estimate_reports_the_profile(capsys, tmp_path):
    import json

    import yaml

    from planner.cli import main

    data = yaml.safe_load((PROBLEMS / "tasks" / "llama3-8b-8xh100.yaml").read_text())
    data["training"]["framework"] = {"profile": "torchtitan", "options": {"compile": True, "float8": "tensorwise"}}
    task = tmp_path / "task.yaml"
    task.write_text(yaml.safe_dump(data))
    assert main(["estimate", str(task)]) in (0, 3)
    assert "priced as framework profile torchtitan (compile True, float8 tensorwise)" in capsys.readouterr().out
    assert main(["estimate", str(task), "--json"]) in (0, 3)
    assert json.loads(capsys.readouterr().out)["framework_profile"] == {
        "profile": "torchtitan", "options": {"compile": True, "float8": "tensorwise"}}
