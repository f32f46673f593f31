"""`planner compare`: the solver beside the heuristics and given plans, one row each."""

from __future__ import annotations

import argparse
import json

from planner.cli.common import add_search_flags, solve_options
from planner.errors import PlannerError
from planner.problem import load_plan, load_problem


def run(args: argparse.Namespace) -> int:
    from planner.cost.step import evaluate
    from planner.solve_report import compare_rows
    from solvers import SOLVERS, SolveResult

    problem = load_problem(args.task)
    options = solve_options(args)
    names = [n.strip() for n in args.solvers.split(",") if n.strip()]
    unknown = [n for n in names if n not in SOLVERS]
    if unknown:
        raise PlannerError(f"unknown solver {unknown[0]!r}; choose from {', '.join(SOLVERS)}")
    rows = [(name, SOLVERS[name].solve(problem, options)) for name in names]
    for path in args.plan or []:
        plan = load_plan(path)
        b = evaluate(problem, plan)
        rows.append((f"plan {path}", SolveResult(solver="user", status="GIVEN", plan=plan,
                                                 objective_s=b.step_time_s, breakdown=b)))
    text, records = compare_rows(rows)
    if args.json:
        print(json.dumps({"problem_hash": problem.hash, "rows": records}, indent=2, default=str))
    else:
        print(f"problem  {problem.model.name} on {problem.cluster.num_devices} x {problem.cluster.device.name}; "
              f"{problem.task.num_sequences} x {problem.task.seq_len} tokens/step, {problem.task.precision}")
        print()
        print(text)
    return 0


def add_parser(sub) -> None:
    cmp_ = sub.add_parser(
        "compare",
        help="the solver beside the heuristics (and given plans): step time, MFU, memory, gap to best",
        description="Run several solvers on one task and price given plans; one row each.",
    )
    cmp_.add_argument("task", help="task YAML")
    cmp_.add_argument("--solvers", default="cpsat,megatron-rules,fsdp-only,greedy",
                      help="comma-separated (add exhaustive for small problems)")
    cmp_.add_argument("--plan", action="append", help="also price this plan file (repeatable)")
    add_search_flags(cmp_)
    cmp_.set_defaults(func=run)
