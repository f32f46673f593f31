"""Long solves show progress on a terminal and nowhere else.

The exact search reports after each phase and round (SolveOptions.progress); `planner solve`
turns that into one status line on standard error when it is a terminal, erased before the
result is printed, and prints nothing of it when piped, with --json or with --log.
"""

import argparse
import io

from planner.cli import main
from planner.cli.progress import StatusLine, search_text, wanted
from planner.llm.problem import load_problem
from solvers import SOLVERS, SolveOptions

from .conftest import PROBLEMS

TASK = str(PROBLEMS / "tasks" / "llama3-70b-64xh100.yaml")


def test_the_search_reports_its_phases_with_a_falling_incumbent_and_a_valid_bound():
    events = []
    result = SOLVERS["cpsat"].solve(load_problem(TASK), SolveOptions(progress=events.append))
    phases = [e["phase"] for e in events]
    assert phases[:4] == ["heuristics", "enumerated", "bounded", "warm start"]
    assert any(p.startswith("CP-SAT round") for p in phases[4:]) or result.stats["rounds"] == 0
    best = [e["best_s"] for e in events if e["best_s"] is not None]
    assert best == sorted(best, reverse=True)  # the incumbent only improves
    assert result.objective_s <= best[-1] * (1 + 1e-12)
    for e in events:
        if e["bound_s"] is not None:
            assert e["bound_s"] <= e["best_s"] * (1 + 1e-12)
            assert e["bound_s"] <= result.objective_s * (1 + 1e-9)  # never above the optimum
    assert events[1]["configurations"] > 0 and events[2]["left"] is not None


def test_a_status_line_is_rewritten_in_place_and_erased():
    stream = io.StringIO()
    line = StatusLine(stream)
    line.update("solve: enumerated | 12 configurations")
    line.update("solve: bounded")
    line.clear()
    text = stream.getvalue()
    assert "\n" not in text and text.startswith("\r") and text.endswith("\r")
    assert text.rsplit("\r", 2)[-2].strip() == ""  # the last write blanks the line


def test_the_status_text_says_phase_counts_best_bound_and_gap():
    text = search_text({"phase": "bounded", "configurations": 1234, "left": 56, "rounds": 0, "best_s": 2.0,
                        "bound_s": 1.5, "elapsed_s": 0.42})
    assert text == "solve: bounded | 1,234 configurations | 56 left | best 2 s | bound 1.5 s | gap 25.00% | 0.4 s"


def test_no_status_line_when_piped_or_with_json_or_log(capsys):
    assert main(["solve", TASK]) == 0
    _, err = capsys.readouterr()
    assert err == ""  # pytest's capture is not a terminal
    assert not wanted(argparse.Namespace(json=True, log=False))
    assert not wanted(argparse.Namespace(json=False, log=True))
