"""`planner solve`: the fastest plan that fits, with its proof; optionally saved and exported."""

from __future__ import annotations

import argparse
import json

from planner.cli.common import add_search_flags, solve_options
from planner.cli.export import EXPORT_TARGETS, export_text
from planner.errors import PlannerError
from planner.problem import load_problem
from planner.report import estimate_json, render_estimate


def run(args: argparse.Namespace) -> int:
    from planner.plan_io import plan_document, save_plan
    from planner.solve_report import proof_line, stats_line
    from solvers import SOLVERS

    problem = load_problem(args.task)
    if args.solver not in SOLVERS:
        raise PlannerError(f"unknown solver {args.solver!r}; choose from {', '.join(SOLVERS)}")
    result = SOLVERS[args.solver].solve(problem, solve_options(args))
    if args.output and result.plan is not None:
        save_plan(result.plan, args.output)
    if args.json:
        out = {
            "solver": result.solver, "status": result.status, "objective_s": result.objective_s,
            "best_bound_s": result.best_bound_s, "gap": result.gap, "wall_time_s": result.wall_time_s,
            "stats": result.stats, "notes": result.notes, "infeasibility": result.infeasibility,
            "plan": plan_document(result.plan) if result.plan else None,
            "estimate": estimate_json(problem, result.plan, result.breakdown) if result.breakdown else None,
        }
        print(json.dumps(out, indent=2, default=str))
    else:
        print(proof_line(result))
        line = stats_line(result)
        if line:
            print(line)
        for note in result.notes:
            print(f"note: {note}")
        if result.infeasibility:
            print(f"infeasible: {result.infeasibility}")
        if result.plan is not None and result.breakdown is not None:
            print()
            print(render_estimate(problem, result.plan, result.breakdown))
        if args.output and result.plan is not None:
            print(f"\nplan written to {args.output}")
    if args.export and result.plan is not None:
        args.to = args.export
        print()
        print(export_text(problem, result.plan, args), end="")
    return 0 if result.plan is not None else 3


def add_parser(sub) -> None:
    sol = sub.add_parser(
        "solve",
        help="find the fastest plan that fits, with a proof (status, bound, gap)",
        description="Search the plan space with a solver (default: CP-SAT, exact). Exit code 3: no plan.",
    )
    sol.add_argument("task", help="task YAML")
    sol.add_argument("--solver", default="cpsat", help="cpsat | exhaustive | megatron-rules | fsdp-only | greedy")
    sol.add_argument("-o", "--output", help="write the plan here (.yaml or .json)")
    sol.add_argument("--export", choices=EXPORT_TARGETS, help="also print the plan as this framework's configuration")
    sol.add_argument("--target-version", help="framework version for --export")
    sol.add_argument("--check-with", help="Megatron-LM checkout to check exported flags against")
    add_search_flags(sol)
    sol.set_defaults(func=run)
