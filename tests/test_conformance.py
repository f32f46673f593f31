"""The conformance catalogue: every registered solver on small named problems with known
outcomes (problems/catalogue/expected.yaml)."""

import pytest
import yaml

from planner.llm.cost.step import evaluate
from planner.llm.problem import load_problem
from planner.llm.space import SpaceOptions
from solvers import SOLVERS, SolveOptions

from .conftest import PROBLEMS

CATALOGUE = PROBLEMS / "catalogue"
EXPECTED = yaml.safe_load((CATALOGUE / "expected.yaml").read_text())
OPTIONS = SolveOptions(space=SpaceOptions(**EXPECTED["options"]), max_evaluations=5_000_000)
CASES = [(name, solver) for name in EXPECTED["problems"] for solver in SOLVERS]


@pytest.mark.parametrize(("name", "solver"), CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_catalogue(name, solver):
    expected = EXPECTED["problems"][name]
    problem = load_problem(CATALOGUE / f"{name}.yaml")
    result = SOLVERS[solver].solve(problem, OPTIONS)
    exact = SOLVERS[solver].exact
    if expected["status"] == "INFEASIBLE":
        assert result.plan is None or not result.breakdown.fits
        if exact:
            assert result.status == "INFEASIBLE"
            for text in expected["message"]:
                assert text in result.infeasibility
        return
    if not exact and result.plan is None:
        assert result.status == "INFEASIBLE"  # a rule of thumb may find nothing
        return
    assert result.plan is not None
    priced = evaluate(problem, result.plan)
    assert priced.fits
    if exact:
        assert result.status == "OPTIMAL"
        assert result.objective_s == pytest.approx(expected["objective_s"], rel=1e-6)
        assert result.plan.summary() == expected["plan"]
        assert result.plan.layers_per_stage(problem.model.num_layers) == expected.get(
            "stage_layers", result.plan.layers_per_stage(problem.model.num_layers)
        )
        assert result.gap == pytest.approx(0.0, abs=1e-9)
    else:
        assert priced.step_time_s >= expected["objective_s"] * (1 - 1e-9)
